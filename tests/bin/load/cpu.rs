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

/// The command name of the SQLite store's writer thread (`comm` keeps 15
/// bytes of `sluice-sqlite-writer`): every durable write of a node passes
/// through it, so its time per event bounds the node's rate.
const WRITER_COMM: &str = "sluice-sqlite-w";

/// Average cores kept busy over a phase.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Every engine node together.
    pub engine: Option<f64>,
    /// The local PostgreSQL server's processes; `None` for SQLite runs.
    pub database: Option<f64>,
    pub tool: Option<f64>,
    /// Every other process on the machine.
    pub other: Option<f64>,
    /// CPU time spent over the phase, for costs per event.
    pub spent: Spent,
    /// The engine thread that used the most CPU over the phase.
    pub busiest: Option<ThreadShare>,
    /// The engine's threads by name (all of one name together: the tokio
    /// workers, the store's writer, checkpoint and sync threads, ...),
    /// largest share first.
    pub by_name: Vec<ThreadShare>,
    /// The largest peak resident memory of any engine node since it
    /// started (`VmHWM`), read at the phase's end.
    pub peak_rss: Option<u64>,
}

impl Usage {
    /// The SQLite writer threads together (`None` on PostgreSQL), as a
    /// share of the engine like [`Usage::busiest`].
    pub fn writer(&self) -> Option<&ThreadShare> {
        self.by_name.iter().find(|t| t.name == WRITER_COMM)
    }
}

/// CPU time spent over a phase, by whom.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    pub engine: Option<Duration>,
    pub database: Option<Duration>,
    pub tool: Option<Duration>,
}

/// An engine thread's CPU over a phase (or all the threads of one name
/// together), as a share of the engine's.
#[derive(Debug, Clone)]
pub struct ThreadShare {
    /// Its name (`/proc/PID/task/TID/comm`), e.g. `tokio-runtime-w`.
    pub name: String,
    /// Its share of every engine thread's time together, in percent.
    pub share: f64,
}

/// CPU time spent so far by the machine, this tool, the engine nodes and
/// (when asked) the database server.
pub struct Meter {
    engine_pids: Vec<u32>,
    machine: Option<Duration>,
    tool: Option<Duration>,
    engine: Option<Duration>,
    /// The engine nodes' threads, by process and thread id: a thread
    /// started during the phase counts in full.
    threads: HashMap<(u32, u32), (String, Duration)>,
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
            threads: thread_times(engine_pids),
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
        let spent = |cores: Option<f64>| cores.map(|c| wall.mul_f64(c));
        let threads: Vec<(String, Duration)> = now
            .threads
            .iter()
            .map(|(id, (name, after))| (name.clone(), after.saturating_sub(self.threads.get(id).map(|(_, t)| *t).unwrap_or_default())))
            .collect();
        let all: Duration = threads.iter().map(|(_, t)| *t).sum();
        let share = |name: String, time: Duration| ThreadShare { name, share: 100.0 * time.as_secs_f64() / all.as_secs_f64() };
        let mut named: HashMap<&str, Duration> = HashMap::new();
        for (name, time) in &threads {
            *named.entry(name).or_default() += *time;
        }
        let mut by_name: Vec<ThreadShare> =
            if all.is_zero() { Vec::new() } else { named.into_iter().map(|(name, time)| share(name.to_owned(), time)).collect() };
        by_name.sort_by(|a, b| b.share.total_cmp(&a.share).then_with(|| a.name.cmp(&b.name)));
        let busiest = threads.into_iter().max_by_key(|(_, t)| *t).filter(|_| !all.is_zero()).map(|(name, time)| share(name, time));
        Usage {
            engine,
            database,
            tool,
            other: machine.map(|m| (m - ours).max(0.0)),
            spent: Spent { engine: spent(engine), database: spent(database), tool: spent(tool) },
            busiest,
            by_name,
            peak_rss: peak_rss(&self.engine_pids),
        }
    }
}

/// Every thread of the engine nodes, with its name and time so far.
fn thread_times(pids: &[u32]) -> HashMap<(u32, u32), (String, Duration)> {
    let mut times = HashMap::new();
    for &pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim_end().to_owned();
            // Ended since the directory was listed: nothing to count.
            if let Some(time) = process_time(&format!("/proc/{pid}/task/{tid}/stat")) {
                times.insert((pid, tid), (name, time));
            }
        }
    }
    times
}

/// The largest peak resident set (`VmHWM`, bytes) among `pids`.
pub fn peak_rss(pids: &[u32]) -> Option<u64> {
    pids.iter().filter_map(|pid| status_kib(*pid, "VmHWM:")).max().map(|kib| kib * 1024)
}

/// The largest current resident set (`VmRSS`, bytes) among `pids`.
pub fn rss(pids: &[u32]) -> Option<u64> {
    pids.iter().filter_map(|pid| status_kib(*pid, "VmRSS:")).max().map(|kib| kib * 1024)
}

/// A `kB` field of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
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
