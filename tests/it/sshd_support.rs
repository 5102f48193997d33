//! The SFTP test server and its helpers (`support::sshd`), proved with
//! OpenSSH's own `sftp` client so that they do not depend on our target:
//! the shared server takes a file from the key user into a fresh
//! directory, and a private server killed mid-transfer cuts the transfer
//! dead, leaves none of its processes behind and listens again after a
//! restart.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::sshd::{is_alive, sftp_env, OwnSshd};

/// Starts `cmd` with `script` on its standard input (closed afterwards, so
/// that batch mode ends after the script).
fn spawn_with_script(mut cmd: Command, script: &str) -> Child {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running sftp (scripts/services.sh installs openssh-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child
}

fn run_script(cmd: Command, script: &str) -> Output {
    spawn_with_script(cmd, script).wait_with_output().unwrap()
}

#[test]
fn the_shared_server_takes_a_file_with_the_key() {
    let env = sftp_env();
    let (remote, local) = env.fresh_dir("sshd_shared_put");
    let src = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.path(), &data).unwrap();

    let out = run_script(
        env.sftp_batch(env.port, &env.known_hosts),
        &format!("put {} {remote}/file.bin\n", src.path().display()),
    );

    assert!(
        out.status.success(),
        "sftp put to the shared server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(local.join("file.bin")).unwrap(), data);
}

#[test]
fn kill_all_cuts_a_transfer_dead_and_restart_listens_again() {
    let env = sftp_env();
    let mut own = OwnSshd::start();
    let (remote, local) = env.fresh_dir("sshd_kill_all");
    let src = tempfile::NamedTempFile::new().unwrap();
    let size = 32 << 20;
    std::fs::write(src.path(), vec![7u8; size]).unwrap();
    // 16 Mbit/s: the transfer lasts about 16 s, long enough to be cut
    // after its first megabyte.
    let put = env.sftp_batch_with(own.port, &own.known_hosts, &env.key_file, &["-l", "16384"]);
    let mut put = spawn_with_script(
        put,
        &format!("put {} {remote}/big.bin\n", src.path().display()),
    );
    let target = local.join("big.bin");
    let started = Instant::now();
    while std::fs::metadata(&target).map_or(0, |m| m.len()) < 1 << 20 {
        if put.try_wait().unwrap().is_some() {
            let out = put.wait_with_output().unwrap();
            panic!(
                "sftp put ended before it was cut ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the put through the own sshd did not start: {}",
            own.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = own.pids();
    // The listener, and for the connection at least its session sshd.
    assert!(before.len() >= 2, "sshd processes {before:?}");

    let killed = own.kill_all();

    for pid in &before {
        assert!(
            killed.contains(pid),
            "{pid} of {before:?} not in {killed:?}"
        );
        assert!(!is_alive(*pid), "sshd process {pid} survived kill_all");
    }
    let out = put.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "sftp put succeeded although its server was killed"
    );
    let landed = std::fs::metadata(&target).unwrap().len();
    assert!(landed < size as u64, "all {landed} bytes landed");
    assert!(TcpStream::connect(("127.0.0.1", own.port)).is_err());

    own.restart();
    let small = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(small.path(), b"after the restart").unwrap();
    let out = run_script(
        env.sftp_batch(own.port, &own.known_hosts),
        &format!("put {} {remote}/again.bin\n", small.path().display()),
    );
    assert!(
        out.status.success(),
        "sftp put after restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(local.join("again.bin")).unwrap(),
        b"after the restart"
    );
}

/// `sftp` in batch mode as `user` to the shared server with `auth` options,
/// typing `secret` (a password, or a key's passphrase) at the prompt that
/// contains `prompt` through `sshpass`.
fn sftp_typing(user: &str, auth: &[&str], prompt: &str, secret: &str) -> Command {
    let env = sftp_env();
    let mut cmd = Command::new("sshpass");
    // The secret goes in the environment (SSHPASS), not on a command line.
    cmd.args([
        "-e",
        "-P",
        prompt,
        "sftp",
        "-o",
        "BatchMode=no",
        "-b",
        "-",
        "-q",
    ])
    .args(auth)
    .args(["-P", &env.port.to_string(), "-o"])
    .arg(format!("UserKnownHostsFile={}", env.known_hosts.display()))
    .args([
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
    ])
    .arg(format!("{user}@{}", env.host))
    .env("SSHPASS", secret);
    cmd
}

#[test]
fn every_credential_of_the_shared_server_logs_in_and_only_as_configured() {
    let env = sftp_env();
    let (remote, local) = env.fresh_dir("sshd_credentials");
    let put = |name: &str| format!("put {} {remote}/{name}\n", env.known_hosts.display());
    let ok = |what: &str, out: Output| {
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    };

    let rsa = env.sftp_batch_with(env.port, &env.known_hosts, &env.rsa_key_file, &[]);
    ok("RSA key", run_script(rsa, &put("rsa")));

    let enc = env.enc_key_file.to_str().unwrap();
    let mut no_passphrase = Command::new("sftp");
    no_passphrase
        .args(["-b", "-", "-q", "-i", enc, "-P", &env.port.to_string()])
        .arg(format!(
            "-oUserKnownHostsFile={}",
            env.known_hosts.display()
        ))
        .args(["-o", "IdentitiesOnly=yes"])
        .arg(format!("{}@{}", env.user, env.host));
    let out = run_script(no_passphrase, &put("enc_without_passphrase"));
    assert!(
        !out.status.success(),
        "the encrypted key worked without its passphrase"
    );
    let with_passphrase = sftp_typing(&env.user, &["-i", enc], "passphrase", &env.key_passphrase);
    ok(
        "encrypted key with its passphrase",
        run_script(with_passphrase, &put("enc")),
    );

    let (pw_remote, pw_local) = env.fresh_pw_dir("sshd_credentials");
    let password = sftp_typing(
        &env.pw_user,
        &["-o", "PubkeyAuthentication=no"],
        "password",
        &env.password,
    );
    ok(
        "password user",
        run_script(
            password,
            &format!("put {} {pw_remote}/pw\n", env.known_hosts.display()),
        ),
    );
    let wrong = sftp_typing(
        &env.pw_user,
        &["-o", "PubkeyAuthentication=no"],
        "password",
        "not the password",
    );
    let out = run_script(
        wrong,
        &format!("put {} {pw_remote}/wrong\n", env.known_hosts.display()),
    );
    assert!(!out.status.success(), "a wrong password logged in");

    for name in ["rsa", "enc"] {
        assert!(local.join(name).is_file(), "{name} did not land");
    }
    assert!(pw_local.join("pw").is_file());
    assert!(!local.join("enc_without_passphrase").exists());
    assert!(!pw_local.join("wrong").exists());

    // The pinned key is the one the server shows.
    let known = std::fs::read_to_string(&env.known_hosts).unwrap();
    assert!(known.contains(&env.host_key), "{known}");
    let scan = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &env.port.to_string(), &env.host])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let scanned = String::from_utf8_lossy(&scan.stdout);
    assert!(scanned.contains(&env.host_key), "ssh-keyscan: {scanned}");
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&env.known_hosts)
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout);
    assert!(fp.contains(&format!(" {} ", env.fingerprint)), "{fp}");
}

#[test]
fn the_full_dir_is_a_small_file_system_the_key_user_writes_to() {
    let env = sftp_env();
    let (remote, local) = env.fresh_full_dir("sshd_full");
    // Total size of the file system holding it: blocks times block size.
    let out = Command::new("stat")
        .args(["-f", "-c", "%b %S"])
        .arg(&local)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes: u64 = text
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap())
        .product();
    assert!(bytes <= 8 << 20, "{} is on {bytes} bytes", local.display());

    let out = run_script(
        env.sftp_batch(env.port, &env.known_hosts),
        &format!("put {} {remote}/small\n", env.known_hosts.display()),
    );
    assert!(
        out.status.success(),
        "put into the full dir: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(local.join("small").is_file());
}
