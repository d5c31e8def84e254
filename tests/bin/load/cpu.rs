//! Where the machine's CPU went during a phase: the engine, this tool, and
//! everything else (which disturbs the figures). Read from `/proc` (Linux);
//! elsewhere nothing is measured and the report leaves the CPU line out.

use std::time::Duration;

/// Clock ticks per second of `/proc` times: `USER_HZ`, fixed at 100 in
/// Linux's user-space ABI.
const USER_HZ: u64 = 100;

/// Average cores kept busy over a phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub engine: Option<f64>,
    pub tool: Option<f64>,
    /// Every other process on the machine.
    pub other: Option<f64>,
}

/// CPU time spent so far by the machine, this tool and the engine.
pub struct Meter {
    engine_pid: Option<u32>,
    machine: Option<Duration>,
    tool: Option<Duration>,
    engine: Option<Duration>,
}

impl Meter {
    /// Starts measuring; `engine_pid` is `None` while there is no engine.
    pub fn start(engine_pid: Option<u32>) -> Meter {
        Meter {
            engine_pid,
            machine: machine_busy(),
            tool: process_time("/proc/self/stat"),
            engine: engine_pid.and_then(|pid| process_time(&format!("/proc/{pid}/stat"))),
        }
    }

    /// Average cores used since [`Meter::start`], over `wall` of real time.
    pub fn usage(&self, wall: Duration) -> Usage {
        let now = Meter::start(self.engine_pid);
        let cores = |before: Option<Duration>, after: Option<Duration>| {
            let spent = after?.checked_sub(before?)?;
            (!wall.is_zero()).then(|| spent.as_secs_f64() / wall.as_secs_f64())
        };
        let machine = cores(self.machine, now.machine);
        let tool = cores(self.tool, now.tool);
        let engine = cores(self.engine, now.engine);
        let ours = tool.unwrap_or(0.0) + engine.unwrap_or(0.0);
        Usage { engine, tool, other: machine.map(|m| (m - ours).max(0.0)) }
    }
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
