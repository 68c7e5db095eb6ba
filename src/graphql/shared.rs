//! Shared execution of `conversationEvents`: subscribers whose documents select nothing
//! that depends on who is looking (no `reactedByMe`, no variables below the root field)
//! get one execution and one serialized payload per event, made by the first of them to
//! need it and sent as is to the rest (Hasura multiplexes live queries this way).
//!
//! A subscription of such a *shape* starts like any other, through the schema, so its
//! document is validated, limited and access-checked exactly as usual; only its stream
//! of events is handed back here instead of being executed once per subscriber. Each
//! event (or typing signal) keeps its renderings by shape for as long as it lives,
//! beside the lookups its subscribers already share. Everything else, including a
//! subscription's errors, is executed per subscriber as before.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::parser::Positioned;
use async_graphql::{Data, Name, Request, Response, ServerError, Value as GraphqlValue};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use uuid::Uuid;

use super::conversation_events::{ConversationEvent, Delivered};
use super::error::ApiError;
use super::limits::MAX_DOCUMENT_BYTES;
use super::{ClientIp, Loaders, ParleySchema, Viewer};
use crate::app::AppState;

/// The one root field whose events are shared.
const ROOT: &str = "conversationEvents";

/// Fields whose values are the same whoever asks, wherever they appear under
/// `conversationEvents`. A field not named here (`reactedByMe`, and any field added
/// later until it is judged) makes its document's subscribers execute on their own.
const SHAREABLE_FIELDS: &[&str] = &[
    "__typename",
    "action",
    "attachments",
    "author",
    "body",
    "contentType",
    "conversationId",
    "count",
    "createdAt",
    "deleted",
    "displayName",
    "durationMs",
    "editedAt",
    "edits",
    "emoji",
    "erased",
    "filename",
    "format",
    "height",
    "id",
    "lastSeenAt",
    "mentions",
    "message",
    "messageId",
    "presence",
    "reactions",
    "readCount",
    "replyCount",
    "replyTo",
    "seq",
    "size",
    "status",
    "thumbnailUrl",
    "typing",
    "url",
    "user",
    "username",
    "width",
    "cursor",
];

/// A subscription document (and operation) whose events render alike for every
/// subscriber. Subscribers of one shape share one `Shape`.
pub struct Shape {
    /// Unique for the process's life: renderings are kept by it.
    id: u64,
    query: String,
    /// The document a rendering executes (`for_rendering`).
    document: ExecutableDocument,
}

type ShapeKey = (String, Option<String>);

/// Shapes in use, so their subscribers share one parsed document and one id.
static SHAPES: LazyLock<Mutex<HashMap<ShapeKey, Weak<Shape>>>> = LazyLock::new(Mutex::default);
static NEXT_SHAPE: AtomicU64 = AtomicU64::new(1);

/// The shape of `request` when its events can be shared; `None` runs it as usual.
pub fn shape_of(request: &Request) -> Option<Arc<Shape>> {
    if request.query.len() > MAX_DOCUMENT_BYTES {
        return None;
    }
    let key = (request.query.clone(), request.operation_name.clone());
    let mut shapes = SHAPES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(shape) = shapes.get(&key).and_then(Weak::upgrade) {
        return Some(shape);
    }
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    let operation_name = request.operation_name.as_deref();
    if !shareable(&document, operation_name) {
        return None;
    }
    let shape = Arc::new(Shape {
        id: NEXT_SHAPE.fetch_add(1, Ordering::Relaxed),
        query: key.0.clone(),
        document: for_rendering(&document, operation_name)?,
    });
    // Entries of shapes no one subscribes to any more go once they outnumber the rest.
    if shapes.len() >= 64 && shapes.len() % 64 == 0 {
        shapes.retain(|_, shape| shape.strong_count() > 0);
    }
    shapes.insert(key, Arc::downgrade(&shape));
    Some(shape)
}

/// The operation a request runs: the named one, or the document's only one.
fn chosen<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a Positioned<OperationDefinition>> {
    let mut operations = document.operations.iter();
    let operation = match operation_name {
        Some(name) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
        None => match (operations.next(), operations.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        },
    };
    operation.map(|(_, operation)| operation)
}

/// Whether the operation subscribes to `conversationEvents` alone and selects only
/// fields that render alike for everyone, with no arguments or directives below the
/// root (which is where variables could make two subscribers' renderings differ).
fn shareable(document: &ExecutableDocument, operation_name: Option<&str>) -> bool {
    let Some(operation) = chosen(document, operation_name) else {
        return false;
    };
    let operation = &operation.node;
    if operation.ty != OperationType::Subscription || !operation.directives.is_empty() {
        return false;
    }
    let [root] = operation.selection_set.node.items.as_slice() else {
        return false;
    };
    let Selection::Field(root) = &root.node else {
        return false;
    };
    if root.node.name.node != ROOT || !root.node.directives.is_empty() {
        return false;
    }
    let mut visited = HashSet::new();
    selects_shareable(document, &root.node.selection_set.node, &mut visited)
}

/// What a rendering executes: the chosen operation alone, with the root field's
/// arguments (which a rendering ignores) replaced by a literal and no variables, so a
/// rendering needs none of its subscriber's variables and subscribers keep none.
fn for_rendering(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<ExecutableDocument> {
    let mut operation = chosen(document, operation_name)?.clone();
    operation.node.variable_definitions.clear();
    let root = operation.node.selection_set.node.items.first_mut()?;
    let Selection::Field(root) = &mut root.node else {
        return None;
    };
    let at = root.pos;
    root.node.arguments = vec![(
        Positioned::new(Name::new("conversationId"), at),
        Positioned::new(GraphqlValue::String(String::new()).into_value(), at),
    )];
    Some(ExecutableDocument {
        operations: DocumentOperations::Single(operation),
        fragments: document.fragments.clone(),
    })
}

fn selects_shareable<'a>(
    document: &'a ExecutableDocument,
    selection: &'a SelectionSet,
    visited: &mut HashSet<&'a str>,
) -> bool {
    selection.items.iter().all(|item| match &item.node {
        Selection::Field(field) => {
            let field = &field.node;
            SHAREABLE_FIELDS.contains(&field.name.node.as_str())
                && field.arguments.is_empty()
                && field.directives.is_empty()
                && selects_shareable(document, &field.selection_set.node, visited)
        }
        Selection::InlineFragment(fragment) => {
            fragment.node.directives.is_empty()
                && selects_shareable(document, &fragment.node.selection_set.node, visited)
        }
        Selection::FragmentSpread(spread) => {
            let name = spread.node.fragment_name.node.as_str();
            if !spread.node.directives.is_empty() {
                return false;
            }
            // Each fragment is judged once (a cycle is the validator's to refuse).
            if !visited.insert(name) {
                return true;
            }
            document.fragments.get(name).is_some_and(|fragment| {
                fragment.node.directives.is_empty()
                    && selects_shareable(document, &fragment.node.selection_set.node, visited)
            })
        }
    })
}

/// Where the subscription resolver hands its stream of events, instead of returning it,
/// when the subscription's payloads are shared.
#[derive(Default)]
pub(super) struct Handoff(Mutex<Option<Events>>);

/// A subscriber's delivered events, or the error that ends them.
type Events = BoxStream<'static, Result<Delivered, async_graphql::Error>>;

impl Handoff {
    pub(super) fn put(&self, items: Events) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(items);
    }

    fn take(&self) -> Option<Events> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// The one event a rendering execution of the subscription yields.
pub(super) struct Preloaded(Mutex<Option<Result<ConversationEvent, async_graphql::Error>>>);

impl Preloaded {
    pub(super) fn take(&self) -> Option<Result<ConversationEvent, async_graphql::Error>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// One subscriber's way to render what its shape has not rendered yet.
struct Renderer {
    schema: ParleySchema,
    state: Arc<AppState>,
    viewer: Uuid,
    ip: ClientIp,
    shape: Arc<Shape>,
}

impl Renderer {
    fn session(&self) -> Arc<Data> {
        let mut data = Data::default();
        data.insert(Viewer::User(self.viewer));
        data.insert(self.ip);
        data.insert(Loaders::new(
            &self.state.db,
            Some(self.viewer),
            self.state.clock.clone(),
        ));
        Arc::new(data)
    }

    /// Executes the shape's selection over one event, as the subscription would have.
    async fn render(&self, item: Result<ConversationEvent, async_graphql::Error>) -> Arc<str> {
        crate::metrics::shared_render();
        let mut request =
            Request::new(self.shape.query.clone()).data(Preloaded(Mutex::new(Some(item))));
        request.set_parsed_query(self.shape.document.clone());
        let response = self
            .schema
            .execute_stream_with_session_data(request, self.session())
            .next()
            .await
            .unwrap_or_else(|| {
                Response::from_errors(vec![ServerError::new(
                    "the event could not be rendered",
                    None,
                )])
            });
        serialized(&response)
    }

    /// The payload for one delivered item, and whether it is the subscription's last.
    async fn payload(&self, item: Result<Delivered, async_graphql::Error>) -> (Arc<str>, bool) {
        crate::metrics::shared_sent();
        let delivered = match item {
            Ok(delivered) => delivered,
            // Errors end one subscriber's subscription: its own.
            Err(error) => return (self.render(Err(error)).await, true),
        };
        let shared = delivered
            .renders()
            .get_or_try_render(self.shape.id, || async {
                let event = delivered.event(&self.state.db).await?;
                Ok::<_, ApiError>(self.render(Ok(event)).await)
            })
            .await;
        match shared {
            Ok(payload) => (payload, false),
            // Not kept: each subscriber meets the failure and ends, to resume later.
            Err(error) => (self.render(Err(error.into())).await, true),
        }
    }
}

fn serialized(response: &Response) -> Arc<str> {
    serde_json::to_string(response).map_or_else(
        |error| {
            tracing::error!(%error, "cannot serialize a subscription payload");
            Arc::from(r#"{"data":null,"errors":[{"message":"the event could not be serialized"}]}"#)
        },
        Arc::from,
    )
}

/// Runs a subscription of `shape` for `viewer`: the payloads of its `next` messages in
/// order (each a GraphQL response as JSON text), ending when the subscription does. A
/// subscription refused at its start yields the refusal, as any other would.
pub fn subscribe(
    schema: ParleySchema,
    state: Arc<AppState>,
    viewer: Uuid,
    ip: ClientIp,
    request: Request,
    shape: Arc<Shape>,
) -> impl Stream<Item = Arc<str>> + Send + 'static {
    let renderer = Arc::new(Renderer {
        schema,
        state,
        viewer,
        ip,
        shape,
    });
    let start = {
        let renderer = renderer.clone();
        async move {
            // Held until the subscription has started or was refused.
            let starting = renderer.state.subscription_starts.acquire().await.ok();
            let handoff = Arc::new(Handoff::default());
            let request = request.data(handoff.clone());
            // With the hand-off in place the execution ends once the subscription has
            // started (or was refused): its responses are the refusal's.
            let refusals: Vec<Arc<str>> = renderer
                .schema
                .execute_stream_with_session_data(request, renderer.session())
                .map(|response| serialized(&response))
                .collect()
                .await;
            drop(starting);
            let events = handoff
                .take()
                .unwrap_or_else(|| futures::stream::empty().boxed());
            // Each step boxed, as the start is: a subscription holds its stream for its
            // whole life, and a combinator keeps room for its future's largest state.
            let payloads = events
                .then(move |item| {
                    let renderer = renderer.clone();
                    Box::pin(async move { renderer.payload(item).await })
                })
                .scan(false, |ended, (payload, last)| {
                    let next = (!*ended).then(|| {
                        *ended = last;
                        payload
                    });
                    std::future::ready(next)
                });
            futures::stream::iter(refusals).chain(payloads)
        }
    };
    futures::stream::once(Box::pin(start)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(query: &str, operation: Option<&str>) -> bool {
        let mut request = Request::new(query);
        if let Some(name) = operation {
            request = request.operation_name(name);
        }
        shape_of(&request).is_some()
    }

    #[test]
    fn documents_that_render_alike_for_everyone_are_shared() {
        assert!(shared(
            "subscription($c: ID!, $a: String) { conversationEvents(conversationId: $c, after: $a) { \
             __typename ... on MessagePosted { cursor message { id body author { id displayName } \
             reactions { emoji count } } } ...typing } } \
             fragment typing on TypingChanged { typing user { username } }",
            None
        ));
        assert!(shared(
            "subscription A { conversationEvents(conversationId: \"x\") { __typename } } \
             query B { me { id } }",
            Some("A")
        ));
    }

    #[test]
    fn documents_whose_rendering_may_differ_between_subscribers_are_not() {
        for query in [
            // Depends on the viewer.
            "subscription { conversationEvents(conversationId: \"x\") { ... on MessagePosted { message { reactions { reactedByMe } } } } }",
            "subscription { conversationEvents(conversationId: \"x\") { ...f } } fragment f on MessagePosted { message { reactions { reactedByMe } } }",
            // Variables, arguments or directives below the root.
            "subscription($s: Boolean!) { conversationEvents(conversationId: \"x\") { __typename @include(if: $s) } }",
            "subscription { conversationEvents(conversationId: \"x\") { ... @skip(if: true) { __typename } } }",
            // Not only conversationEvents, or not a subscription.
            "subscription { conversationEvents(conversationId: \"x\") { __typename } other: conversationEvents(conversationId: \"y\") { __typename } }",
            "subscription { myEvents { __typename } }",
            "query { conversationEvents { __typename } }",
            // Not parsable, or an unknown fragment: the schema's to refuse.
            "subscription { conversationEvents(",
            "subscription { conversationEvents(conversationId: \"x\") { ...missing } }",
        ] {
            assert!(!shared(query, None), "{query}");
        }
        // Two operations and no name to choose one.
        assert!(!shared(
            "subscription A { conversationEvents(conversationId: \"x\") { __typename } } \
             subscription B { conversationEvents(conversationId: \"x\") { __typename } }",
            None
        ));
    }

    #[test]
    fn subscribers_of_one_document_share_one_shape_and_others_get_their_own() {
        let query = "subscription { conversationEvents(conversationId: \"x\") { __typename } }";
        let first = shape_of(&Request::new(query)).expect("shared");
        let second = shape_of(&Request::new(query)).expect("shared");
        assert!(Arc::ptr_eq(&first, &second));
        let other = shape_of(&Request::new(
            "subscription { conversationEvents(conversationId: \"x\") { ... on TypingChanged { typing } } }",
        ))
        .expect("shared");
        assert_ne!(first.id, other.id);
    }
}
