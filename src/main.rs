// `--features dhat-heap` profiles the heap (dhat-heap.json, written when the server
// stops), to find what a connection or a subscription holds.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let cli = parley::cli::parse();
    if let Err(error) = parley::cli::run(cli).await {
        eprintln!("parley: {error:#}");
        std::process::exit(1);
    }
    Ok(())
}
