//! The command line of `sluice-load`, parsed by hand: a handful of flags
//! does not warrant a parser.

use std::time::Duration;

pub const USAGE: &str = "\
usage: sluice-load [--duration SECS] [--raw-duration SECS] [--concurrency N]
                   [--batch N] [--raw-only] [--skip-half] [--failures]

  --duration SECS      length of each engine phase (max rate, half rate, or
                       the clean and failing runs of --failures); default 10
  --raw-duration SECS  length of the raw baseline phase; default 5
  --concurrency N      concurrent posters; default 64
  --batch N            events per ingest request (the raw baseline always
                       posts one); default 1
  --raw-only           measure the raw baseline only, without the engine
  --skip-half          skip the half-rate latency phase
  --failures           instead of the usual phases, compare two engine runs
                       over 10 configurations: a clean one, and one where
                       one receiver in ten answers 500 (see tests/LOAD.md)

`sluice-load serve ...` runs the engine itself (the tool starts itself so).
";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub raw_duration: Duration,
    pub concurrency: usize,
    pub batch: usize,
    pub raw_only: bool,
    pub skip_half: bool,
    /// The failure comparison (clean run, failing run) instead of raw, max and half.
    pub failures: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(10),
            raw_duration: Duration::from_secs(5),
            concurrency: 64,
            batch: 1,
            raw_only: false,
            skip_half: false,
            failures: false,
        }
    }
}

/// The command line, understood.
pub enum Command {
    Run(Options),
    Help,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--duration" => options.duration = seconds(&flag, args.next())?,
            "--raw-duration" => options.raw_duration = seconds(&flag, args.next())?,
            "--concurrency" => options.concurrency = count(&flag, args.next())?,
            "--batch" => options.batch = count(&flag, args.next())?,
            "--raw-only" => options.raw_only = true,
            "--skip-half" => options.skip_half = true,
            "--failures" => options.failures = true,
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.failures && (options.raw_only || options.skip_half) {
        return Err("--failures runs neither the raw nor the half-rate phase; leave out --raw-only and --skip-half".to_owned());
    }
    Ok(Command::Run(options))
}

fn seconds(flag: &str, value: Option<String>) -> Result<Duration, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a number of seconds"))?;
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{flag}: {value:?} is not a positive number of seconds"))
}

fn count(flag: &str, value: Option<String>) -> Result<usize, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a number"))?;
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{flag}: {value:?} is not a positive whole number"))
}
