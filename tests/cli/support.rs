//! One fluent builder for every integration test: an in-process simulator (inventory, seed
//! and faults given fluently, started on 127.0.0.1:0 at first use), a temporary directory
//! holding the runbook and the journals, the real binary, and assertions on its exit code,
//! its output and what the simulator counted.
//!
//! ```ignore
//! let t = Test::new().inventory(TWO_TIER).runbook(RUNBOOK);
//! t.clone().args(["run", "runbook.toml", "--yes"]).fast_polling()
//!     .code(1).stdout_contains("Failed jobs:").touched(&["legacy"]).run();
//! t.clone().args(["plan", "runbook.toml"]).success().run();
//! ```
//!
//! Clones share the directory and the simulator, so one test can run the binary many times
//! against the same cloud. One file on purpose: it is the single builder every module uses.
#![allow(dead_code)]

use powerbook::sim::{Faults, SimConfig, SimHandle, SimStats};
use std::cell::{OnceCell, RefCell};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A free port on loopback, closed: a gate test opens it when it wants the gate to pass.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Opens `port` on loopback after `delay`, accepting (and closing) connections from then on.
pub fn open_port_after(port: u16, delay: Duration) -> JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        for c in listener.incoming() {
            drop(c);
        }
    })
}

/// The journal a test's single run wrote in its runs directory.
pub fn only_journal(t: &Test) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(t.path("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

/// Runs `powerbook ARGS` on a pseudo-terminal (util-linux `script`), typing `answer`.
pub fn on_a_terminal(t: &Test, args: &str, answer: &str) -> (i32, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_powerbook"));
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(t.dir())
        .env("POWERBOOK_TEST_MODE", "1")
        .env("NO_COLOR", "1")
        .env("POWERBOOK_RUNS_DIR", t.path("runs"))
        .env("ABIQUO_API_URL", t.sim().base_url())
        .env("ABIQUO_API_USERNAME", "admin")
        .env("ABIQUO_API_PASSWORD", "xabiquo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the command on a pseudo-terminal");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    (out.status.code().unwrap_or(-1), text)
}

/// A hard off of every VM.
pub const ALL_OFF: &str = r#"
name = "all off"
[[step]]
name = "off"
action = "off"
targets = [{ vdc = "*" }]
"#;

/// Fast task polling and short bounds for `run` and `resume`, so tests stay quick and a
/// stall fails instead of hanging.
pub const FAST_POLLING: [&str; 8] = [
    "--poll-initial",
    "20ms",
    "--poll-max",
    "100ms",
    "--lock-wait",
    "20s",
    "--request-timeout",
    "5s",
];

/// The crate root, so tests can name files relative to it (`runbooks/lab.toml`).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `n` generated VMs (vApps of 20: vapp-001, vapp-002...), all ON, tasks of ~`ms` ms.
pub fn generated(n: usize, ms: u64) -> SimConfig {
    let mut c = SimConfig::generated(n);
    c.task_duration = Duration::from_millis(ms);
    c.task_jitter = Duration::from_millis(ms / 5);
    c.durations.clear();
    c
}

/// Polls `done` every 10 ms; fails the test when it is still false after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The simulator of a test: configured first, started at first use.
#[derive(Default)]
struct Cloud {
    pending: RefCell<Option<SimConfig>>,
    sim: OnceCell<SimHandle>,
    rt: OnceCell<tokio::runtime::Runtime>,
}

impl Cloud {
    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        })
    }

    fn configure(&self, f: impl FnOnce(&mut SimConfig)) {
        assert!(
            self.sim.get().is_none(),
            "configure the simulator before its first use"
        );
        let mut pending = self.pending.borrow_mut();
        f(pending.get_or_insert_with(SimConfig::lab));
    }

    fn configured(&self) -> bool {
        self.sim.get().is_some() || self.pending.borrow().is_some()
    }

    fn sim(&self) -> &SimHandle {
        self.sim.get_or_init(|| {
            let config = self
                .pending
                .borrow_mut()
                .take()
                .expect("no simulator configured for this test");
            self.runtime()
                .block_on(SimHandle::start(config))
                .expect("start the simulator")
        })
    }
}

/// What a run must show, checked when it ends.
#[derive(Clone, Default)]
struct Expect {
    code: Option<i32>,
    stdout_contains: Vec<String>,
    stdout_lacks: Vec<String>,
    stderr_contains: Vec<String>,
    stderr_lacks: Vec<String>,
    touched: Option<Vec<String>>,
    actions: Option<Vec<String>>,
    mutations: Option<usize>,
}

/// A test: its directory, its simulator, and the next invocation of the binary.
#[derive(Clone)]
pub struct Test {
    dir: Rc<tempfile::TempDir>,
    cloud: Rc<Cloud>,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Vec<u8>>,
    current_dir: Option<PathBuf>,
    stdout_closed: bool,
    timeout: Duration,
    expect: Expect,
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    /// A fresh temporary directory, no simulator yet, a 60 s limit per invocation.
    pub fn new() -> Self {
        Self {
            dir: Rc::new(tempfile::tempdir().unwrap()),
            cloud: Rc::default(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            current_dir: None,
            stdout_closed: false,
            timeout: Duration::from_secs(60),
            expect: Expect::default(),
        }
    }

    // --- the simulator ---------------------------------------------------------------

    /// Serves `config`.
    pub fn sim_config(self, config: SimConfig) -> Self {
        self.cloud.configure(|c| *c = config);
        self
    }

    /// Serves an inventory in the format of `runbooks/lab.toml`.
    pub fn inventory(self, toml: &str) -> Self {
        let config = SimConfig::from_inventory_str("test-inventory.toml", toml).unwrap();
        self.sim_config(config)
    }

    /// Serves `n` generated VMs whose tasks take ~`ms` milliseconds.
    pub fn generated(self, n: usize, ms: u64) -> Self {
        self.sim_config(generated(n, ms))
    }

    /// Serves the built-in lab, its tasks `speed` times faster.
    pub fn lab(self, speed: f64) -> Self {
        self.configure(|c| {
            *c = SimConfig::lab();
            c.speed = speed;
        })
    }

    pub fn seed(self, seed: u64) -> Self {
        self.configure(|c| c.seed = seed)
    }

    pub fn faults(self, f: impl FnOnce(&mut Faults)) -> Self {
        self.configure(|c| f(&mut c.faults))
    }

    /// Any other change to the simulator's configuration (the lab when none was given).
    pub fn configure(self, f: impl FnOnce(&mut SimConfig)) -> Self {
        self.cloud.configure(f);
        self
    }

    /// The same directory with another, not yet configured simulator.
    pub fn other_cloud(&self) -> Self {
        Self {
            cloud: Rc::default(),
            ..self.clone()
        }
    }

    /// The simulator, started now if it was not yet.
    pub fn sim(&self) -> &SimHandle {
        self.cloud.sim()
    }

    pub fn stats(&self) -> SimStats {
        self.sim().stats()
    }

    /// Actions accepted per VM, in order.
    pub fn actions(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.stats()
            .mutations
            .into_iter()
            .map(|(vm, recs)| (vm, recs.into_iter().map(|r| r.action).collect()))
            .collect()
    }

    /// Enters the test's runtime, so servers of the test can be spawned onto it.
    pub fn runtime_guard(&self) -> tokio::runtime::EnterGuard<'_> {
        self.cloud.runtime().enter()
    }

    /// Runs a future (a library call against the simulator) to completion.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.cloud.runtime().block_on(future)
    }

    // --- files -----------------------------------------------------------------------

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `name` in the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to `name` in the test's directory.
    pub fn file(self, name: &str, text: &str) -> Self {
        self.write(name, text);
        self
    }

    /// Writes `runbook.toml`.
    pub fn runbook(self, text: &str) -> Self {
        self.file("runbook.toml", text)
    }

    /// Writes `text` to `name` in the test's directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    // --- the invocation --------------------------------------------------------------

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends [`FAST_POLLING`].
    pub fn fast_polling(self) -> Self {
        self.args(FAST_POLLING)
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Runs from `dir` instead of the test's directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Closes the read end of stdout at once, as a pager that quits would.
    pub fn stdout_closed(mut self) -> Self {
        self.stdout_closed = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    // --- expectations (checked when the run ends) ------------------------------------

    pub fn code(mut self, code: i32) -> Self {
        self.expect.code = Some(code);
        self
    }

    pub fn success(self) -> Self {
        self.code(0)
    }

    /// Exit 1: the run finished but some VMs failed.
    pub fn failure(self) -> Self {
        self.code(1)
    }

    pub fn stdout_contains(mut self, needle: impl Into<String>) -> Self {
        self.expect.stdout_contains.push(needle.into());
        self
    }

    pub fn stdout_lacks(mut self, needle: impl Into<String>) -> Self {
        self.expect.stdout_lacks.push(needle.into());
        self
    }

    pub fn stderr_contains(mut self, needle: impl Into<String>) -> Self {
        self.expect.stderr_contains.push(needle.into());
        self
    }

    pub fn stderr_lacks(mut self, needle: impl Into<String>) -> Self {
        self.expect.stderr_lacks.push(needle.into());
        self
    }

    /// Exactly these VMs have had a mutation accepted (since the simulator started).
    pub fn touched(mut self, vms: &[&str]) -> Self {
        self.expect.touched = Some(vms.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// Every touched VM had exactly these actions accepted, in this order.
    pub fn actions_per_vm(mut self, actions: &[&str]) -> Self {
        self.expect.actions = Some(actions.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// This many mutations were accepted in all.
    pub fn mutations(mut self, n: usize) -> Self {
        self.expect.mutations = Some(n);
        self
    }

    // --- running ---------------------------------------------------------------------

    /// Runs to completion and checks the expectations.
    pub fn run(self) -> Output {
        self.spawn().wait()
    }

    /// Starts the binary: no colour, test mode, journals in the test's directory, no
    /// Abiquo settings from the developer's shell, and the simulator's URL and account
    /// when the test has one.
    pub fn spawn(self) -> Running {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_powerbook"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ABIQUO_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env_remove("RUST_LOG")
            .env("POWERBOOK_TEST_MODE", "1")
            .env("NO_COLOR", "1")
            .env("POWERBOOK_RUNS_DIR", self.path("runs"));
        if self.cloud.configured() {
            cmd.env("ABIQUO_API_URL", self.sim().base_url())
                .env("ABIQUO_API_USERNAME", "admin")
                .env("ABIQUO_API_PASSWORD", "xabiquo");
        }
        for (key, value) in &self.env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.args(&self.args)
            .current_dir(self.current_dir.as_deref().unwrap_or(self.dir.path()))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn powerbook");
        if let Some(input) = self.stdin.clone() {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let stdout = child.stdout.take().expect("stdout pipe");
        let stdout = if self.stdout_closed {
            drop(stdout);
            std::thread::spawn(Vec::new)
        } else {
            drain(stdout)
        };
        let stderr = drain(child.stderr.take().expect("stderr pipe"));
        Running {
            child,
            stdout,
            stderr,
            test: self,
        }
    }

    fn check(&self, out: &Output) {
        let e = &self.expect;
        if let Some(code) = e.code {
            assert_eq!(out.code, code, "unexpected exit code\n{}", out.context());
        }
        for needle in &e.stdout_contains {
            assert!(
                out.stdout.contains(needle.as_str()),
                "stdout lacks {needle:?}\n{}",
                out.context()
            );
        }
        for needle in &e.stdout_lacks {
            assert!(
                !out.stdout.contains(needle.as_str()),
                "stdout has {needle:?}\n{}",
                out.context()
            );
        }
        for needle in &e.stderr_contains {
            assert!(
                out.stderr.contains(needle.as_str()),
                "stderr lacks {needle:?}\n{}",
                out.context()
            );
        }
        for needle in &e.stderr_lacks {
            assert!(
                !out.stderr.contains(needle.as_str()),
                "stderr has {needle:?}\n{}",
                out.context()
            );
        }
        if e.touched.is_none() && e.actions.is_none() && e.mutations.is_none() {
            return;
        }
        let stats = self.stats();
        if let Some(vms) = &e.touched {
            let found: Vec<&String> = stats.mutations.keys().collect();
            assert_eq!(found, vms.iter().collect::<Vec<_>>(), "{}", out.context());
        }
        if let Some(want) = &e.actions {
            for (vm, records) in &stats.mutations {
                let found: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
                assert_eq!(found, *want, "{vm}\n{}", out.context());
            }
        }
        if let Some(n) = e.mutations {
            assert_eq!(stats.mutation_count(), n, "{}", out.context());
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// A started invocation.
pub struct Running {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    test: Test,
}

impl Running {
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL, and reap it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        self.child.wait().unwrap();
    }

    /// SIGINT, as Ctrl-C would send.
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    /// SIGTERM, as a scheduler stopping the job would send.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the end (killing it after the test's timeout, which fails the test) and
    /// checks the expectations.
    pub fn wait(mut self) -> Output {
        let deadline = Instant::now() + self.test.timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for powerbook") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "powerbook {:?} did not finish within {:?}",
                    self.test.args, self.test.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = Output {
            args: self.test.args.clone(),
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&self.stdout.join().expect("stdout reader")).into(),
            stderr: String::from_utf8_lossy(&self.stderr.join().expect("stderr reader")).into(),
        };
        self.test.check(&out);
        out
    }
}

/// What a finished invocation produced.
#[derive(Debug)]
pub struct Output {
    pub args: Vec<OsString>,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The invocation and everything it printed, for assertion messages.
    pub fn context(&self) -> String {
        format!(
            "powerbook {:?}\n--- exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }

    /// Parses stdout as JSON (a `RunReport`, a plan document, ...).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not the JSON expected: {e}\n{}", self.context()))
    }

    /// Exit code and both streams in one text, for snapshots.
    pub fn transcript(&self) -> String {
        format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}
