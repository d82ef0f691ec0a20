//! `claudemesh-broker`: `serve`, and administration of a data directory.

#![forbid(unsafe_code)]

use clap::Parser;

use claudemesh_broker::cli::{self, Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => serve(&cli, args),
        _ => cli::run_admin(&cli),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("claudemesh-broker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(cli: &Cli, args: &cli::ServeArgs) -> anyhow::Result<()> {
    claudemesh_broker::logging::init();
    claudemesh_broker::net::fdlimit::raise_nofile();
    let config = cli::serve_config(cli, args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("claudemesh-broker")
        .build()?;
    runtime.block_on(async move {
        let broker = claudemesh_broker::start(config).await?;
        claudemesh_broker::shutdown::signal().await;
        broker.shutdown().await;
        Ok(())
    })
}
