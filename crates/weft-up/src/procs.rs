//! The processes `weft up` runs in the pods: started through `ip netns exec` (and `setpriv` for
//! another user), each in its own process group, output to a log file, watched for exit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::error::UpError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Control,
    Proxy,
    App,
    SpireServer,
    SpireAgent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Proxy => "proxy",
            Role::App => "app",
            Role::SpireServer => "spire-server",
            Role::SpireAgent => "spire-agent",
        }
    }
}

pub struct Proc {
    pub pod: String,
    pub role: Role,
    pub log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
    /// How it was started, to start it again.
    launch: Launch,
    /// When the current run started.
    started: Instant,
    /// How many times it was started again after it exited.
    pub restarts: u32,
    /// When it will be started again, once it has exited (see [`Proc::supervise`]).
    restart_at: Option<Instant>,
}

#[derive(Clone)]
struct Launch {
    ns: String,
    user: Option<String>,
    groups: Vec<u32>,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
}

/// Kubernetes' container restart back-off: 10 s doubling to 5 min there; here 1 s doubling to
/// 30 s, reset once a run has lasted [`RESTART_RESET`].
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
const RESTART_RESET: Duration = Duration::from_secs(10);

/// What [`Proc::supervise`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Supervised {
    Running,
    /// It exited; it starts again after the given delay.
    Exited(ExitStatus, Duration),
    Waiting,
    /// Started again: its new process group.
    Restarted(i32),
}

fn id_of(user: &str, flag: &str) -> Result<String, UpError> {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .map_err(|e| UpError::Command {
            cmd: format!("id {flag} {user}"),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(UpError::Command {
            cmd: format!("id {flag} {user}"),
            reason: format!("no user {user:?} on this machine"),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The uid and gid of a user name.
pub fn ids(user: &str) -> Result<(u32, u32), UpError> {
    let num = |flag: &str| -> Result<u32, UpError> {
        let v = id_of(user, flag)?;
        v.parse().map_err(|_| UpError::Command {
            cmd: format!("id {flag} {user}"),
            reason: format!("not a number: {v:?}"),
        })
    };
    Ok((num("-u")?, num("-g")?))
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds a program: `given` (a `weft.yaml` entry, which must be executable; `field` names it
/// in the error), else the environment variable `var`, else the first of `names` on PATH.
/// None: not installed.
pub fn find_binary(
    given: Option<&PathBuf>,
    var: Option<&str>,
    names: &[&str],
    file: &Path,
    field: &str,
) -> Result<Option<PathBuf>, UpError> {
    if let Some(p) = given {
        if executable(p) {
            return Ok(Some(p.clone()));
        }
        return Err(UpError::Spec {
            file: file.to_path_buf(),
            field: field.to_string(),
            message: format!("{} is not an executable file", p.display()),
        });
    }
    if let Some(p) = var.and_then(std::env::var_os).map(PathBuf::from)
        && executable(&p)
    {
        return Ok(Some(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let p = dir.join(name);
            if executable(&p) {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

impl Proc {
    /// Starts `argv` in network namespace `ns`, as `user` (numeric or a name) when given.
    pub fn spawn(
        pod: &str,
        role: Role,
        ns: &str,
        user: Option<&str>,
        argv: &[String],
        env: &BTreeMap<String, String>,
        log: &Path,
    ) -> Result<Proc, UpError> {
        Self::spawn_in_groups(pod, role, ns, user, &[], argv, env, log)
    }

    /// [`Proc::spawn`] with supplementary `groups` for `user` (none: cleared).
    #[allow(clippy::too_many_arguments)]
    pub fn spawn_in_groups(
        pod: &str,
        role: Role,
        ns: &str,
        user: Option<&str>,
        groups: &[u32],
        argv: &[String],
        env: &BTreeMap<String, String>,
        log: &Path,
    ) -> Result<Proc, UpError> {
        let launch = Launch {
            ns: ns.to_string(),
            user: user.map(str::to_string),
            groups: groups.to_vec(),
            argv: argv.to_vec(),
            env: env.clone(),
        };
        let child = launch.start(std::fs::File::create(log)?)?;
        Ok(Proc {
            pod: pod.to_string(),
            role,
            log: log.to_path_buf(),
            child,
            exited: None,
            launch,
            started: Instant::now(),
            restarts: 0,
            restart_at: None,
        })
    }

    /// Keeps it running as Kubernetes' `restartPolicy: Always` does: once it has exited it is
    /// started again (output appended to its log) after a back-off that grows while it keeps
    /// exiting soon after starting.
    pub fn supervise(&mut self) -> Result<Supervised, UpError> {
        let Some(status) = self.poll() else {
            return Ok(Supervised::Running);
        };
        let now = Instant::now();
        let Some(at) = self.restart_at else {
            let delay = if now.duration_since(self.started) >= RESTART_RESET {
                Duration::ZERO
            } else {
                (RESTART_BACKOFF * 2u32.saturating_pow(self.restarts.min(8)))
                    .min(RESTART_BACKOFF_MAX)
            };
            self.restart_at = Some(now + delay);
            return Ok(Supervised::Exited(status, delay));
        };
        if now < at {
            return Ok(Supervised::Waiting);
        }
        let log = std::fs::OpenOptions::new().append(true).open(&self.log)?;
        self.child = self.launch.start(log)?;
        self.exited = None;
        self.restart_at = None;
        self.started = now;
        self.restarts += 1;
        Ok(Supervised::Restarted(self.group()))
    }

    /// The process group (= the pid of `ip netns exec`, which execs the command).
    pub fn group(&self) -> i32 {
        self.child.id() as i32
    }

    /// The exit status once it has exited.
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Ok(Some(s)) = self.child.try_wait()
        {
            self.exited = Some(s);
        }
        self.exited
    }

    /// The exit status if it has already been seen to exit.
    pub fn exited_status(&self) -> Option<ExitStatus> {
        self.exited
    }

    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = Pid::from_raw(self.group()) {
            let _ = rustix::process::kill_process_group(pid, sig);
        }
    }

    /// The last `n` lines of its output.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        last_lines(&self.log, n)
    }
}

impl Launch {
    fn start(&self, file: std::fs::File) -> Result<Child, UpError> {
        let err = file.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]);
        if let Some(user) = &self.user {
            let (uid, gid) = if user.chars().all(|c| c.is_ascii_digit()) {
                (user.to_string(), user.to_string())
            } else {
                (id_of(user, "-u")?, id_of(user, "-g")?)
            };
            cmd.args(["setpriv", "--reuid", &uid, "--regid", &gid]);
            if self.groups.is_empty() {
                cmd.arg("--clear-groups");
            } else {
                let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
                cmd.args(["--groups", &list.join(",")]);
            }
            cmd.arg("--");
        }
        cmd.args(&self.argv)
            .envs(&self.env)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.spawn().map_err(|e| UpError::Command {
            cmd: self.argv.join(" "),
            reason: e.to_string(),
        })
    }
}

pub fn last_lines(log: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// SIGTERM to every process group, then SIGKILL to those still there after `grace`.
pub fn stop_all(procs: &mut [Proc], grace: Duration) {
    for p in procs.iter_mut() {
        if p.poll().is_none() {
            p.signal(Signal::TERM);
        }
    }
    let start = Instant::now();
    while start.elapsed() < grace && procs.iter_mut().any(|p| p.poll().is_none()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in procs.iter_mut() {
        p.signal(Signal::KILL);
        let _ = p.child.wait();
    }
}
