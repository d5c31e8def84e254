//! Where the machine's CPU went during a phase: the engine, the database
//! server (PostgreSQL runs only), this tool, and everything else (which
//! disturbs the figures). Read from `/proc` (Linux); elsewhere nothing is
//! measured and the report leaves the CPU line out.

use std::collections::HashMap;
use std::time::Duration;

/// Clock ticks per second of `/proc` times: `USER_HZ`, fixed at 100 in
/// Linux's user-space ABI.
const USER_HZ: u64 = 100;

/// The command name (`/proc/PID/comm`) of PostgreSQL's server processes:
/// the postmaster and every backend it forks keep it.
const DATABASE_COMM: &str = "postgres";

/// Average cores kept busy over a phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Every engine node together.
    pub engine: Option<f64>,
    /// The local PostgreSQL server's processes; `None` for SQLite runs.
    pub database: Option<f64>,
    pub tool: Option<f64>,
    /// Every other process on the machine.
    pub other: Option<f64>,
}

/// CPU time spent so far by the machine, this tool, the engine nodes and
/// (when asked) the database server.
pub struct Meter {
    engine_pids: Vec<u32>,
    machine: Option<Duration>,
    tool: Option<Duration>,
    engine: Option<Duration>,
    /// Per process: a backend started during the phase counts in full,
    /// one that ended during it is lost (a small error for the pooled
    /// connections of the engines).
    database: Option<HashMap<u32, Duration>>,
}

impl Meter {
    /// Starts measuring; `engine_pids` is empty while there is no engine.
    /// `database`: measure the processes named `postgres` too.
    pub fn start(engine_pids: &[u32], database: bool) -> Meter {
        Meter {
            engine_pids: engine_pids.to_vec(),
            machine: machine_busy(),
            tool: process_time("/proc/self/stat"),
            engine: engines_time(engine_pids),
            database: database.then(database_times).flatten(),
        }
    }

    /// Average cores used since [`Meter::start`], over `wall` of real time.
    pub fn usage(&self, wall: Duration) -> Usage {
        let now = Meter::start(&self.engine_pids, self.database.is_some());
        let cores = |before: Option<Duration>, after: Option<Duration>| {
            let spent = after?.checked_sub(before?)?;
            (!wall.is_zero()).then(|| spent.as_secs_f64() / wall.as_secs_f64())
        };
        let machine = cores(self.machine, now.machine);
        let tool = cores(self.tool, now.tool);
        let engine = cores(self.engine, now.engine);
        let database = self.database.as_ref().zip(now.database.as_ref()).and_then(|(before, after)| {
            let spent = after.iter().map(|(pid, time)| time.saturating_sub(before.get(pid).copied().unwrap_or_default())).sum();
            cores(Some(Duration::ZERO), Some(spent))
        });
        let ours = tool.unwrap_or(0.0) + engine.unwrap_or(0.0) + database.unwrap_or(0.0);
        Usage { engine, database, tool, other: machine.map(|m| (m - ours).max(0.0)) }
    }
}

/// The engine nodes' time together; `None` without any node to read.
fn engines_time(pids: &[u32]) -> Option<Duration> {
    pids.iter().map(|pid| process_time(&format!("/proc/{pid}/stat"))).reduce(|a, b| Some(a? + b?)).flatten()
}

/// Time spent so far by each process named [`DATABASE_COMM`].
fn database_times() -> Option<HashMap<u32, Duration>> {
    let mut times = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != DATABASE_COMM {
            continue;
        }
        // Gone since the directory was listed: nothing to count.
        if let Some(time) = process_time(&format!("/proc/{pid}/stat")) {
            times.insert(pid, time);
        }
    }
    Some(times)
}

/// User plus system time of the process whose `stat` file is at `path`.
fn process_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks_to_time(ticks))
}

/// Time all CPUs spent neither idle nor waiting for I/O, from `/proc/stat`.
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let ticks: Vec<u64> = line.split_whitespace().skip(1).take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
    let (idle, iowait) = (*ticks.get(3)?, *ticks.get(4)?);
    Some(ticks_to_time(ticks.iter().sum::<u64>() - idle - iowait))
}

fn ticks_to_time(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / USER_HZ)
}
