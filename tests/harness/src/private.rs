//! Servers of a test's own, for what the machine's shared ones cannot show: certificates from a
//! CA the test makes (openssl), and a PostgreSQL cluster with TLS and its own `pg_hba.conf`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

/// A fresh directory under the system's temp dir.
pub fn temp_dir(kind: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("datasync-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Writes `ca.pem`/`ca.key` and a server certificate `server.pem`/`server.key` for
/// `subject_alt_name` (openssl's syntax, e.g. `IP:127.0.0.1` or `DNS:localhost`) into `dir`.
pub fn certificates(dir: &Path, subject_alt_name: &str) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        assert!(status.success(), "openssl {args:?}");
    };
    let key = ["-newkey", "rsa:2048", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &key,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=datasync test CA"],
    ]
    .concat());
    std::fs::write(dir.join("san.ext"), format!("subjectAltName={subject_alt_name}\n"))
        .unwrap_or_else(|e| panic!("san.ext: {e}"));
    run(&[
        &["req"][..],
        &key,
        &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=datasync test server"],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

/// A nats-server of the test's own (this machine's binary, `NATS_SERVER_BIN` or
/// `/usr/sbin/nats-server`) on a free loopback port, with JetStream, a log file, `conf` added to
/// its configuration and `env` in its environment. Killed and removed on drop.
pub struct PrivateNats {
    pub port: u16,
    child: std::process::Child,
    dir: PathBuf,
}

impl PrivateNats {
    pub fn start(dir: PathBuf, conf: &str, env: &[(String, String)]) -> Self {
        let bin =
            std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
        let port = crate::process::free_port();
        let config = format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\nlog_file: \"{}\"\n{conf}\n",
            dir.join("js").display(),
            dir.join("nats.log").display()
        );
        std::fs::write(dir.join("nats.conf"), config).unwrap_or_else(|e| panic!("nats.conf: {e}"));
        let child = Command::new(&bin)
            .arg("-c")
            .arg(dir.join("nats.conf"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (NATS_SERVER_BIN): {e}"));
        let up = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let this = Self { port, child, dir };
        assert!(up, "nats-server did not listen; its log: {}", this.log());
        this
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster of the test's own on a free loopback port (Debian's binaries, run as
/// `postgres` when the test runs as root, as initdb demands). Stopped and removed on drop.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// `conf` lines go into `postgresql.conf`, `hba` replaces `pg_hba.conf`; `files` are copied
    /// into the data directory first (certificates, readable by the server only).
    pub fn start(conf: &str, hba: &str, files: &[(&Path, &str)]) -> Self {
        let bin = postgres_bin();
        let as_postgres = is_root();
        let dir = temp_dir("pg");
        let data = dir.join("data");
        if as_postgres {
            chown_postgres(&dir);
        }
        let this = Self { port: crate::process::free_port(), dir, bin, as_postgres };
        this.run("initdb", &["-D", &data.to_string_lossy(), "-A", "trust", "-U", "postgres"]);
        for (from, name) in files {
            let to = data.join(name);
            std::fs::copy(from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
            let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
            std::fs::set_permissions(&to, mode).unwrap_or_else(|e| panic!("chmod: {e}"));
        }
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\n{conf}\n",
            this.port,
            this.dir.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap_or_else(|e| panic!("pg_hba: {e}"));
        if as_postgres {
            chown_postgres(&this.dir);
        }
        this.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &this.dir.join("log").to_string_lossy(),
                "-w",
                "start",
            ],
        );
        let up = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::net::TcpStream::connect(("127.0.0.1", this.port)).is_ok()
        });
        assert!(up, "private PostgreSQL did not listen on {}", this.port);
        this
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let _ = std::panic::catch_unwind(|| {
            self.run("pg_ctl", &["-D", &data, "-m", "immediate", "stop"])
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/*/bin` (Debian's layout).
fn postgres_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return dir.into();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|bin| bin.join("initdb").exists())
        .unwrap_or_else(|| panic!("needs PostgreSQL's initdb (PG_BIN_DIR or /usr/lib/postgresql)"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown_postgres(dir: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("chown: {e}"));
    assert!(status.success(), "chown postgres {}", dir.display());
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
