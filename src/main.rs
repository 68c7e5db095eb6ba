// `--features dhat-heap` profiles the heap (dhat-heap.json, written when the server
// stops), to find what a connection or a subscription holds.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

// glibc's allocator was over a quarter of Parley's CPU in a rebuild, where batches of
// events are decoded on one task and freed on others. mimalloc (free lists per thread
// and page), without transparent huge pages (a purged batch came back 2 MiB at a time):
// rebuilds ×1.07–1.08, exports ×1.15, sendMessage on SQLite ×1.08–1.18, for 9–14 MiB
// more RSS and 0.8 KiB more a socket (README, "Benchmarks").
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
