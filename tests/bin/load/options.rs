//! The command line of `sluice-load`, parsed by hand: a handful of flags
//! does not warrant a parser.

use std::time::Duration;

use crate::database::{self, Server};

pub const USAGE: &str = "\
usage: sluice-load [--duration SECS] [--raw-duration SECS] [--concurrency N]
                   [--batch N] [--raw-only] [--skip-half] [--failures]
                   [--chaos [--rate EV/S]]
                   [--database-url URL | --postgres] [--nodes N[,N...]]
                   [--compare] [--soak SECS] [--backlog N] [--preview]

  --duration SECS      length of each engine phase (max rate, half rate, the
                       clean and failing runs of --failures, or the
                       calibration, clean and chaos runs of --chaos); default 10
  --raw-duration SECS  length of the raw baseline phase; default 5
  --concurrency N      concurrent posters; default 64
  --batch N            events per ingest request (the raw baseline always
                       posts one); default 1
  --raw-only           measure the raw baseline only, without the engine
  --skip-half          skip the half-rate latency phase
  --failures           instead of the usual phases, compare two engine runs
                       over 10 configurations: a clean one, and one where
                       one receiver in ten answers 500 (see tests/LOAD.md)
  --chaos              instead of the usual phases, compare two engine runs
                       with 10 tenants at one offered rate: a clean one, and
                       one where the tenth runs a script that never ends,
                       has a receiver that answers after 4 s and posts bad
                       input; the other nine are measured (see tests/LOAD.md)
  --rate EV/S          --chaos: the events per second offered, spread evenly
                       over the 10 tenants; default: half the delivery rate
                       of a calibration run as fast as the engine answers
  --database-url URL   run the engine on PostgreSQL instead of SQLite: URL
                       names a server (e.g. postgres://postgres@127.0.0.1:5432/postgres);
                       each run gets a fresh database on it, dropped afterwards
  --postgres           --database-url postgres://postgres@127.0.0.1:5432/postgres
  --nodes N[,N...]     engine nodes on the one database (needs PostgreSQL);
                       several counts: one run each, then a table; default 1
  --compare            PostgreSQL with 1 node, then 3 nodes, and a table:
                       --nodes 1,3 (and --postgres unless --database-url)
  --soak SECS          run the half-rate phase this long instead, and report
                       the engine's resident memory after its first minute
                       and at its end
  --backlog N          instead of the max and half phases, post as fast as
                       the engine answers until N events were accepted for
                       a receiver that answers 500, and report the engine's
                       resident memory as the backlog grows (see tests/LOAD.md)
  --preview            instead of the max and half phases: a script preview's
                       throughput over 10,000 stored events, and the live
                       delivery rate without and with previews running

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
    /// The chaos comparison (clean run, chaos run over ten tenants) instead
    /// of raw, max and half.
    pub chaos: bool,
    /// `--chaos`: events per second offered; `None`: calibrated.
    pub rate: Option<f64>,
    /// The PostgreSQL server to run the engine on; `None`: SQLite.
    pub database: Option<Server>,
    /// Engine nodes per run, one run per count (more than one count only
    /// for the usual phases).
    pub nodes: Vec<usize>,
    /// The half-rate phase's length when it is a memory soak.
    pub soak: Option<Duration>,
    /// `--backlog`: the pending deliveries to build up.
    pub backlog: Option<usize>,
    /// `--preview`: measure previews against live delivery.
    pub preview: bool,
}

impl Options {
    /// Several node counts: the runs are compared in a table.
    pub fn compares_nodes(&self) -> bool {
        self.nodes.len() > 1
    }
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
            chaos: false,
            rate: None,
            database: None,
            nodes: vec![1],
            soak: None,
            backlog: None,
            preview: false,
        }
    }
}

/// The command line, understood.
pub enum Command {
    Run(Box<Options>),
    Help,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut options = Options::default();
    // Settled after every flag is read: they depend on one another.
    let (mut database_url, mut postgres, mut nodes, mut compare) = (None, false, None, false);
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
            "--chaos" => options.chaos = true,
            "--rate" => options.rate = Some(rate(&flag, args.next())?),
            "--database-url" => database_url = Some(text(&flag, args.next(), "a postgres:// URL")?),
            "--postgres" => postgres = true,
            "--nodes" => nodes = Some(counts(&flag, args.next())?),
            "--compare" => compare = true,
            "--soak" => options.soak = Some(seconds(&flag, args.next())?),
            "--backlog" => options.backlog = Some(count(&flag, args.next())?),
            "--preview" => options.preview = true,
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.failures && (options.raw_only || options.skip_half) {
        return Err("--failures runs neither the raw nor the half-rate phase; leave out --raw-only and --skip-half".to_owned());
    }
    if options.chaos && (options.raw_only || options.skip_half || options.failures) {
        return Err("--chaos runs neither the raw nor the half-rate phase, nor --failures; leave those out".to_owned());
    }
    if options.soak.is_some() && (options.skip_half || options.failures || options.chaos || options.raw_only) {
        return Err("--soak lengthens the half-rate phase; leave out --skip-half, --failures, --chaos and --raw-only".to_owned());
    }
    if options.backlog.is_some() && (options.soak.is_some() || options.failures || options.chaos || options.raw_only) {
        return Err("--backlog replaces the max and half phases; leave out --soak, --failures, --chaos and --raw-only".to_owned());
    }
    if options.rate.is_some() && !options.chaos {
        return Err("--rate sets the offered load of --chaos; add --chaos or leave it out".to_owned());
    }
    let url = match (database_url, postgres) {
        (Some(_), true) => return Err("--postgres names the default server; leave it out with --database-url".to_owned()),
        (Some(url), false) => Some(url),
        (None, true) => Some(database::DEFAULT_URL.to_owned()),
        (None, false) => compare.then(|| database::DEFAULT_URL.to_owned()),
    };
    options.database = url.as_deref().map(Server::parse).transpose()?;
    options.nodes = match (nodes, compare) {
        (Some(_), true) => return Err("--compare runs 1 node, then 3; leave out --nodes".to_owned()),
        (Some(nodes), false) => nodes,
        (None, true) => vec![1, 3],
        (None, false) => vec![1],
    };
    if options.database.is_none() && options.nodes != [1] {
        return Err("--nodes needs --database-url or --postgres: engines on SQLite share nothing".to_owned());
    }
    if options.raw_only && options.database.is_some() {
        return Err("--raw-only starts no engine; leave out --database-url, --postgres, --nodes and --compare".to_owned());
    }
    if options.failures && options.compares_nodes() {
        return Err("--failures runs one node count; give --nodes a single number and leave out --compare".to_owned());
    }
    if options.backlog.is_some() && options.compares_nodes() {
        return Err("--backlog runs one node count; give --nodes a single number and leave out --compare".to_owned());
    }
    if options.chaos && options.compares_nodes() {
        return Err("--chaos runs one node count; give --nodes a single number and leave out --compare".to_owned());
    }
    Ok(Command::Run(Box::new(options)))
}

fn text(flag: &str, value: Option<String>, what: &str) -> Result<String, String> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| format!("{flag} needs {what}"))
}

/// `N` or `N,N,...`: positive counts, in the order given.
fn counts(flag: &str, value: Option<String>) -> Result<Vec<usize>, String> {
    let value = text(flag, value, "a number, or numbers separated by commas")?;
    value.split(',').map(|n| count(flag, Some(n.trim().to_owned()))).collect()
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

fn rate(flag: &str, value: Option<String>) -> Result<f64, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a number of events per second"))?;
    value
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("{flag}: {value:?} is not a positive number of events per second"))
}

fn count(flag: &str, value: Option<String>) -> Result<usize, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a number"))?;
    value.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| format!("{flag}: {value:?} is not a positive whole number"))
}
