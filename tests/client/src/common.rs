//! A real PostgreSQL server for client tests, built to be killed.
//!
//! Each [`TestCluster`] is a fresh `initdb` in its own directory under `/tmp`,
//! run with the binaries of the PostgreSQL version under test, so it loads
//! the syncguard build that `cargo pgrx install` put into that server's
//! pkglibdir (`make test` installs it before this tier). For a version kept
//! in a chroot (`PG_ROOT`, scripts/pgversion.sh) the server programs run in
//! the chroot, the cluster's directory is under the chroot's `/tmp`, and
//! everything on this side uses the host's path to it. The server runs as the `postgres` system user,
//! because initdb refuses root: as root we switch uid in the child directly,
//! anybody else goes through `sudo -u postgres`.
//!
//! The postmaster is our own child process (not daemonized by `pg_ctl`), so
//! after `kill -9` we reap it ourselves: a zombie would keep its pid "alive"
//! and the next start would refuse the stale `postmaster.pid`. It also means
//! Ctrl-C on `cargo test` reaches the servers.
//!
//! On drop the server is stopped (immediate mode) and its directory deleted;
//! when the test is panicking, both the directory and the server log are kept
//! and their paths printed.

use postgres::{Client, Config, NoTls};
use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server may take to accept connections (crash recovery included).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long backends may take to notice that their postmaster died.
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TestCluster {
    /// `/tmp/syncguard-test.XXXXXX`, owned by postgres: `data/` and the socket.
    dir: PathBuf,
    /// Server log (stdout and stderr of the postmaster), in cargo's target/tmp.
    log: PathBuf,
    bindir: PathBuf,
    port: u16,
    postmaster: Option<Child>,
    /// Extra server settings (`-c name=value`), kept across restarts.
    settings: Vec<String>,
}

impl TestCluster {
    /// initdb a new cluster and start it.
    pub fn new() -> Self {
        Self::with_settings(&[])
    }

    /// initdb a new cluster and start it with extra server settings, e.g.
    /// `[("shared_preload_libraries", "syncguard")]`.
    pub fn with_settings(settings: &[(&str, &str)]) -> Self {
        let bindir = PathBuf::from(pg_config("--bindir"));
        let dir = PathBuf::from(
            run_ok(as_postgres("mktemp").arg("-d").arg(format!(
                "{}/tmp/syncguard-test.XXXXXX",
                pg_root().unwrap_or_default()
            )))
            .trim(),
        );
        // A client that is not root must reach the socket inside it.
        run_ok(as_postgres("chmod").arg("755").arg(&dir));
        run_ok(
            &mut server(bindir.join("initdb"))
                .arg("-D")
                .arg(dir.join("data"))
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-locale",
                    "--encoding=UTF8",
                    "--no-sync",
                ])
                .command(),
        );
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let tmp = crate::target_dir().join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        let log = tmp.join(format!(
            "syncguard-test-{}-{}.log",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cluster = TestCluster {
            dir,
            log,
            bindir,
            port: free_port(),
            postmaster: None,
            settings: settings.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        };
        cluster.start();
        cluster
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The unix socket directory (also the cluster's base directory).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn is_running(&self) -> bool {
        self.postmaster.is_some()
    }

    /// Connection settings for `dbname`, as user postgres over the unix socket.
    pub fn config(&self, dbname: &str) -> Config {
        let mut config = Config::new();
        config
            .host_path(&self.dir)
            .port(self.port)
            .user("postgres")
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// A client connected to the `postgres` database.
    pub fn connect(&self) -> Client {
        self.connect_to("postgres")
    }

    pub fn connect_to(&self, dbname: &str) -> Client {
        self.config(dbname)
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connect to {dbname}: {e}\n{}", self.log_tail()))
    }

    /// A client connected to `postgres` with `CREATE EXTENSION syncguard` done.
    pub fn connect_with_extension(&self) -> Client {
        let mut client = self.connect();
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS syncguard")
            .unwrap_or_else(|e| panic!("CREATE EXTENSION syncguard: {e}"));
        client
    }

    /// Start the postmaster (again) and wait until it accepts connections.
    /// After a crash this includes crash recovery.
    pub fn start(&mut self) {
        assert!(self.postmaster.is_none(), "server already running");
        for _attempt in 0..10 {
            let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
            let log = File::options()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("server log");
            let child = server(self.bindir.join("postgres"))
                .arg("-D")
                .arg(self.data_dir())
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-k")
                .arg(&self.dir)
                .args([
                    "-c",
                    "listen_addresses=localhost",
                    "-c",
                    "logging_collector=off",
                ])
                .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
                .command()
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("server log"))
                .stderr(log)
                .spawn()
                .expect("spawn postgres");
            self.postmaster = Some(child);
            match self.wait_ready() {
                Ok(()) => return,
                Err(true) => {
                    let said = self.log_since(log_start);
                    if said.contains("could not bind") {
                        // Somebody took the port meanwhile: take another one.
                        self.port = free_port();
                    } else if said.contains("pre-existing shared memory block") {
                        // A backend of a killed postmaster is still exiting.
                        sleep(Duration::from_millis(500));
                    } else {
                        panic!("server exited while starting\n{}", self.log_tail());
                    }
                }
                Err(false) => panic!(
                    "server not ready after {READY_TIMEOUT:?}\n{}",
                    self.log_tail()
                ),
            }
        }
        panic!("server did not start in 10 attempts\n{}", self.log_tail());
    }

    /// Clean shutdown (fast mode: running transactions are rolled back).
    /// False when the server did not stop by itself and had to be killed.
    pub fn stop(&mut self) -> bool {
        self.pg_ctl_stop("fast")
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// `kill -9` the postmaster, as the OOM killer or a hasty operator would,
    /// and wait until its backends noticed and exited, so that `start()` can
    /// follow (it refuses to share memory with leftover backends).
    pub fn kill_postmaster(&mut self) {
        let pid = self.postmaster_pid();
        let children = children_of(pid);
        self.signal(pid, "KILL");
        if let Some(mut child) = self.postmaster.take() {
            let _ = child.wait();
        }
        let deadline = Instant::now() + ORPHAN_TIMEOUT;
        while children.iter().any(|&c| is_alive(c)) {
            if Instant::now() > deadline {
                // A backend stuck in a long operation: finish the job.
                for &c in children.iter().filter(|&&c| is_alive(c)) {
                    self.signal(c, "KILL");
                }
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// The postmaster's pid, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> u32 {
        let pidfile = run_ok(as_postgres("cat").arg(self.data_dir().join("postmaster.pid")));
        pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("postmaster.pid")
    }

    /// The server process serving `client`.
    pub fn backend_pid(&self, client: &mut Client) -> u32 {
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .expect("pg_backend_pid")
            .get(0);
        pid as u32
    }

    /// `pg_terminate_backend(pid)` from another session, waiting until it is gone.
    pub fn terminate_backend(&self, pid: u32) {
        let mut admin = self.connect();
        let done: bool = admin
            .query_one("SELECT pg_terminate_backend($1, 10000)", &[&(pid as i32)])
            .expect("pg_terminate_backend")
            .get(0);
        assert!(done, "backend {pid} did not terminate");
    }

    /// `kill -9` one backend. The postmaster then resets the whole cluster
    /// (every session is dropped, crash recovery runs); this returns once it
    /// accepts connections again.
    pub fn kill_backend(&mut self, pid: u32) {
        let mut watcher = self.connect();
        self.signal(pid, "KILL");
        // The postmaster answers a crashed backend by ending every session:
        // once ours is gone, the reset is under way and readiness means recovered.
        let deadline = Instant::now() + READY_TIMEOUT;
        while watcher.simple_query("SELECT 1").is_ok() {
            assert!(
                Instant::now() < deadline,
                "the cluster did not reset after kill -9 of {pid}"
            );
            sleep(Duration::from_millis(20));
        }
        self.wait_ready()
            .unwrap_or_else(|_| panic!("server did not recover\n{}", self.log_tail()));
    }

    /// What the server logged after byte `offset` of its log.
    fn log_since(&self, offset: u64) -> String {
        let bytes = fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or_default()).into_owned()
    }

    /// The whole server log so far.
    pub fn log_text(&self) -> String {
        self.log_since(0)
    }

    /// Run a client program of the server's bindir (`pg_dump`, `pg_restore`,
    /// `createdb`, ...) as postgres against this server; panics if it fails,
    /// returns its stdout.
    pub fn run_tool(&self, tool: &str, args: &[&str]) -> String {
        run_ok(
            &mut server(self.bindir.join(tool))
                .arg("-h")
                .arg(&self.dir)
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", "postgres"])
                .args(args)
                .command(),
        )
    }

    /// Runs `sql` through the server's psql in database `db` (stdin, so
    /// psql's meta-commands work), stopping at the first error. Ok: the
    /// output; Err: output and error messages.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        use std::io::Write;
        let mut child = server(self.bindir.join("psql"))
            .arg("-h")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-X", "-v", "ON_ERROR_STOP=1", "-d", db])
            .command()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("psql starts");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- server log {} (last lines) ---\n{tail}",
            self.log.display()
        )
    }

    /// Poll until the server accepts a connection and answers. `Err(true)`:
    /// the postmaster exited; `Err(false)`: timeout.
    fn wait_ready(&mut self) -> Result<(), bool> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut config = self.config("postgres");
        config.connect_timeout(Duration::from_secs(2));
        loop {
            if let Ok(mut client) = config.connect(NoTls) {
                if client.simple_query("SELECT 1").is_ok() {
                    return Ok(());
                }
            }
            let child = self.postmaster.as_mut().expect("server not started");
            if let Ok(Some(_)) = child.try_wait() {
                self.postmaster = None;
                return Err(true);
            }
            if Instant::now() > deadline {
                return Err(false);
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> bool {
        let Some(mut child) = self.postmaster.take() else {
            return true;
        };
        let status = server(self.bindir.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60"])
            .command()
            .stdout(Stdio::null())
            .status();
        let stopped = matches!(status, Ok(s) if s.success());
        if !stopped {
            let _ = child.kill();
        }
        let _ = child.wait();
        stopped
    }

    fn signal(&self, pid: u32, signal: &str) {
        // Not checked: the process may have exited on its own meanwhile.
        let _ = as_postgres("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status();
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
        if std::thread::panicking() {
            eprintln!(
                "kept cluster {} and log {}",
                self.dir.display(),
                self.log.display()
            );
        } else {
            let _ = as_postgres("rm").arg("-rf").arg(&self.dir).status();
            let _ = fs::remove_file(&self.log);
        }
    }
}

/// xorshift64*: a small deterministic generator (one per client thread), so
/// that a failing load test replays the same choices.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The root of the chroot that holds the server version under test, if any
/// (`PG_ROOT`, set by scripts/pgversion.sh for PG=17 and PG=18).
fn pg_root() -> Option<String> {
    std::env::var("PG_ROOT").ok().filter(|r| !r.is_empty())
}

/// A program of the server version under test, run as postgres: the
/// system's, or in the chroot of `PG_ROOT` with that root taken off the
/// front of every path it is given (files under it are the host's too: the
/// chroot's postgres is the host's uid).
pub struct ServerCmd {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
}

pub fn server(program: impl AsRef<std::ffi::OsStr>) -> ServerCmd {
    ServerCmd {
        program: program.as_ref().to_owned(),
        args: Vec::new(),
    }
}

impl ServerCmd {
    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, it: I) -> Self {
        self.args
            .extend(it.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn command(self) -> Command {
        let Some(root) = pg_root() else {
            let mut cmd = as_postgres(&self.program);
            cmd.args(&self.args);
            return cmd;
        };
        let inside = |s: &std::ffi::OsString| -> String {
            s.to_string_lossy().replace(&format!("{root}/"), "/")
        };
        let mut cmd = if is_root() {
            Command::new("chroot")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "chroot"]);
            c
        };
        cmd.arg("--userspec=postgres:postgres")
            .arg(&root)
            .args([
                "/usr/bin/env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LC_ALL=C",
            ])
            .arg("HOME=/var/lib/postgresql")
            .arg(inside(&self.program))
            .args(self.args.iter().map(inside));
        cmd.current_dir("/");
        cmd
    }
}

/// A command run as the postgres system user: root switches uid in the
/// child, anybody else uses sudo.
fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = if is_root() {
        let mut cmd = Command::new(program);
        let (uid, gid) = postgres_ids();
        cmd.uid(uid).gid(gid);
        cmd
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["-n", "-u", "postgres"]).arg(program);
        cmd
    };
    // The postgres user may not be able to read the caller's directory.
    cmd.current_dir("/");
    cmd
}

fn is_root() -> bool {
    // /proc/self belongs to the effective user of this process.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The extension's own tables and sequences (name, relkind), by name.
pub fn extension_relations(client: &mut Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT c.oid::regclass::text, c.relkind::text
               FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
              WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
                AND d.refclassid = 'pg_extension'::regclass
                AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'syncguard')
                AND c.relkind IN ('r', 'p', 'S')
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Every row of each relation (name, relkind) as a line `name: row`, in
/// order; a sequence as its last value and whether it was called.
pub fn rows_as_text(client: &mut Client, relations: &[(String, String)]) -> Vec<String> {
    let mut lines = vec![];
    for (name, kind) in relations {
        let sql = if kind == "S" {
            format!("SELECT format('%s %s', last_value, is_called) FROM {name}")
        } else {
            format!("SELECT t::text FROM {name} t ORDER BY 1")
        };
        for row in client.query(&sql, &[]).unwrap() {
            lines.push(format!("{name}: {}", row.get::<_, String>(0)));
        }
    }
    lines
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        run_ok(Command::new("id").args([flag, "postgres"]))
            .trim()
            .parse()
            .expect("id postgres")
    };
    (id("-u"), id("-g"))
}

/// Run a command, panic with its output if it fails, return its stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn pg_config(arg: &str) -> String {
    let pg_config = std::env::var("PG_CONFIG").unwrap_or_else(|_| "/usr/bin/pg_config".into());
    run_ok(Command::new(pg_config).arg(arg)).trim().to_string()
}

/// A port nobody listens on right now (the server may still lose a race for
/// it; `start` retries).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Field 3 of /proc/<pid>/stat is the state; a zombie (`Z`) has already
/// released everything it held.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in field 2 may contain spaces: parse after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn is_alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((state, _)) if state != 'Z')
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(proc_stat(pid), Some((_, ppid)) if ppid == parent))
        .collect()
}
