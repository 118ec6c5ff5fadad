use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = wagate::cli::Cli::parse();
    match wagate::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wagate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
