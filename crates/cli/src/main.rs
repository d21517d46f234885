//! `cks`: the cks-lab command line for scenario authors and operators.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod lint;
mod show;

#[derive(Debug, Parser)]
#[command(name = "cks", version, about = "cks-lab command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with scenario catalogs.
    #[command(subcommand)]
    Scenario(ScenarioCommand),
}

#[derive(Debug, Subcommand)]
enum ScenarioCommand {
    /// Check a catalog, or a single scenario directory, and print every problem with
    /// file:line. Exits 0 only when there are no errors (warnings are allowed).
    Lint {
        /// A catalog directory (with categories.yaml) or one scenario directory.
        dir: PathBuf,
        /// Print machine-readable JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Treat warnings as errors (exit 1 when there are any).
        #[arg(long)]
        strict: bool,
    },
    /// Print a parsed scenario: metadata, setup steps, tasks, hints and rules.
    Show {
        /// The scenario id.
        id: String,
        /// The catalog directory.
        #[arg(long, default_value = "scenarios")]
        dir: PathBuf,
        /// Print the parsed scenario as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scenario(ScenarioCommand::Lint { dir, json, strict }) => lint::run(&dir, json, strict),
        Command::Scenario(ScenarioCommand::Show { id, dir, json }) => show::run(&id, &dir, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
