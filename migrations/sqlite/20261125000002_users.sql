-- Read model: registered accounts (projector `users`).
create table users (
    id            text not null primary key,
    username      text not null unique,
    display_name  text not null,
    registered_at text not null
);
