#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = parley::cli::parse();
    if let Err(error) = parley::cli::run(cli).await {
        eprintln!("parley: {error:#}");
        std::process::exit(1);
    }
    Ok(())
}
