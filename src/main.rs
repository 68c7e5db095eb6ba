// `--features dhat-heap` profiles the heap (dhat-heap.json, written when the server
// stops), to find what a connection or a subscription holds.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

// glibc's allocator was over a quarter of Parley's CPU in a rebuild, where batches of
// events are decoded on the reader's task and freed on others. With mimalloc (free
// lists per thread and page) a `rebuild --all` of 294,014 events took 10 % less of
// Parley's CPU and 5 % less time (README, "Rebuilding and exporting").
#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
