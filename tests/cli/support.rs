//! Runs the real `powerbook` binary and checks what it did. Generic on purpose: any command,
//! arguments, environment and stdin; results are the exit code and both output streams.
//!
//! ```ignore
//! let out = Powerbook::new().args(["validate", "x.toml"]).run();
//! out.code(2).stderr_contains("unknown key");
//! ```
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_powerbook");

/// A small runtime for tests that drive an in-process simulator from sync code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The binary set up like an operator's shell pointed at the simulator: its account,
/// deterministic output, no stray credentials from the developer's environment, and journals
/// kept out of the work tree (a test that cares passes `--runs-dir` or sets its own).
pub fn against(sim: &powerbook::sim::SimHandle) -> Command {
    let runs = std::env::temp_dir().join(format!("powerbook-test-runs-{}", std::process::id()));
    let mut cmd = Command::new(BIN);
    cmd.env("ABIQUO_API_URL", sim.base_url())
        .env("ABIQUO_API_USERNAME", "admin")
        .env("ABIQUO_API_PASSWORD", "xabiquo")
        .env("POWERBOOK_TEST_MODE", "1")
        .env("NO_COLOR", "1")
        .env("POWERBOOK_RUNS_DIR", runs)
        .env_remove("ABIQUO_API_TOKEN")
        .env_remove("ABIQUO_API_BEARER")
        .env_remove("ABIQUO_API_INSECURE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// The crate root, so tests can name files relative to it (`runbooks/lab.toml`).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A pending invocation of the binary.
pub struct Powerbook {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    dir: PathBuf,
    timeout: Duration,
}

impl Default for Powerbook {
    fn default() -> Self {
        Self::new()
    }
}

impl Powerbook {
    /// Deterministic output (no colour, test mode), run from the crate root, no Abiquo
    /// settings inherited from the developer's shell, and a 60 s limit.
    pub fn new() -> Self {
        Self {
            args: Vec::new(),
            env: vec![
                ("POWERBOOK_TEST_MODE".into(), "1".into()),
                ("NO_COLOR".into(), "1".into()),
            ],
            stdin: None,
            dir: root().to_path_buf(),
            timeout: Duration::from_secs(60),
        }
    }

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

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs to completion (killing the process after the timeout, which fails the test).
    pub fn run(self) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_powerbook"));
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ABIQUO_") {
                cmd.env_remove(&key);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn powerbook");
        if let Some(input) = self.stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let mut out_pipe = child.stdout.take().expect("stdout pipe");
        let mut err_pipe = child.stderr.take().expect("stderr pipe");
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out_pipe.read_to_end(&mut buf);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err_pipe.read_to_end(&mut buf);
            buf
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for powerbook") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "powerbook {:?} did not finish within {:?}",
                    self.args, self.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output {
            args: self.args,
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out_reader.join().expect("stdout reader")).into(),
            stderr: String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into(),
        }
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
    fn context(&self) -> String {
        format!(
            "powerbook {:?}\n--- exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }

    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code,
            expected,
            "unexpected exit code\n{}",
            self.context()
        );
        self
    }

    pub fn success(&self) -> &Self {
        self.code(0)
    }

    pub fn stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.context()
        );
        self
    }

    pub fn stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.context()
        );
        self
    }

    pub fn stdout_lacks(&self, needle: &str) -> &Self {
        assert!(
            !self.stdout.contains(needle),
            "stdout has {needle:?}\n{}",
            self.context()
        );
        self
    }

    pub fn stderr_lacks(&self, needle: &str) -> &Self {
        assert!(
            !self.stderr.contains(needle),
            "stderr has {needle:?}\n{}",
            self.context()
        );
        self
    }

    /// Parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.context()))
    }

    /// Exit code and both streams in one text, for snapshots.
    pub fn transcript(&self) -> String {
        format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}
