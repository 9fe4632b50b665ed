//! Authentication and authorization against a real daemon: users and sessions over HTTPS (curl),
//! refusals and their audit records, tenants, node API keys, PAM with a real OS account, local
//! users on the unix socket, and a login storm.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::DaemonProcess;
use serde_json::{Value, json};

struct Reply {
    status: u16,
    body: String,
    headers: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    /// The session id set by a `Set-Cookie: confluentsessionid=...` header.
    fn session(&self) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let lower = line.to_ascii_lowercase();
            let rest = lower.strip_prefix("set-cookie: confluentsessionid=")?;
            let length = rest.find(';')?;
            let start = line.len() - rest.len();
            Some(line[start..start + length].to_string())
        })
    }
}

/// HTTPS client with the daemon's site CA.
struct Https {
    base: String,
    ca: String,
    scratch: std::path::PathBuf,
}

impl Https {
    fn new(daemon: &DaemonProcess, scratch: &std::path::Path) -> Https {
        Https {
            base: format!("https://localhost:{}", daemon.listener("https").port()),
            ca: daemon.ca_path().to_string_lossy().into_owned(),
            scratch: scratch.to_path_buf(),
        }
    }

    fn call(&self, method: &str, path: &str, extra: &[&str], body: Option<Value>) -> Reply {
        let headers = self
            .scratch
            .join(format!("headers-{}", rand::random::<u64>()));
        let mut command = Command::new("curl");
        command
            .args([
                "-sS",
                "-w",
                "\n%{http_code}",
                "--cacert",
                &self.ca,
                "-X",
                method,
            ])
            .arg("-D")
            .arg(&headers)
            .args(extra);
        if let Some(body) = body {
            command.args([
                "-H",
                "Content-Type: application/json",
                "-d",
                &body.to_string(),
            ]);
        }
        let output = command
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl is installed (tests/run installs it)");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let headers_text = std::fs::read_to_string(&headers).unwrap_or_default();
        let _ = std::fs::remove_file(&headers);
        Reply {
            status: status.trim().parse().unwrap_or(0),
            body: body.to_string(),
            headers: headers_text,
        }
    }

    fn as_user(&self, method: &str, path: &str, user: &str, body: Option<Value>) -> Reply {
        self.call(method, path, &["-u", user], body)
    }

    fn with_session(&self, method: &str, path: &str, session: &str, body: Option<Value>) -> Reply {
        self.call(
            method,
            path,
            &["-H", &format!("ConfluentSession: {session}")],
            body,
        )
    }
}

fn root_request(
    daemon: &DaemonProcess,
    operation: &str,
    path: &str,
    parameters: Value,
) -> Vec<Value> {
    daemon
        .client()
        .request(operation, path, parameters)
        .unwrap_or_else(|error| panic!("{operation} {path}: {error}"))
}

fn create_user(
    daemon: &DaemonProcess,
    name: &str,
    role: &str,
    password: &str,
    tenant: Option<&str>,
) {
    let mut parameters = json!({"name": name, "role": role, "password": password});
    if let Some(tenant) = tenant {
        parameters["tenant"] = json!(tenant);
    }
    let answer = root_request(daemon, "create", "/users/", parameters);
    assert!(
        answer.iter().all(|message| message.get("error").is_none()),
        "{answer:?}"
    );
}

/// The `api.denied` audit records so far (polled: refusals before authentication are not
/// durable appends).
fn denied_records(daemon: &DaemonProcess, wanted: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records: Vec<Value> = root_request(
            daemon,
            "retrieve",
            "/events/audit",
            json!({"types": "api.denied"}),
        )
        .into_iter()
        .filter_map(|message| message.get("event").cloned())
        .collect();
        if wanted(&records) || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn has_record(records: &[Value], user: &str, target: &str, status: u64) -> bool {
    records.iter().any(|record| {
        record["user"] == user
            && record["detail"]["target"]
                .as_str()
                .is_some_and(|text| text.contains(target))
            && record["detail"]["outcome"]["status"] == status
    })
}

#[test]
fn users_sessions_roles_and_refusals_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start_https_only(&dir.path().join("state"), &[]);
    let https = Https::new(&daemon, dir.path());
    root_request(&daemon, "create", "/noderange/", json!({"name": "n[1-2]"}));
    create_user(&daemon, "alice", "Administrator", "alice-secret", None);
    // Role names accept unique case-insensitive prefixes.
    create_user(&daemon, "mona", "mon", "mona-secret", None);
    create_user(&daemon, "otto", "OPER", "otto-secret", None);
    let shown = root_request(&daemon, "retrieve", "/users/otto", json!({}));
    assert_eq!(shown[0]["role"], "Operator");
    assert_eq!(shown[0]["password"], json!({"isset": true}));
    assert!(
        !shown[0].to_string().contains("argon2"),
        "no hash is shown: {shown:?}"
    );
    // Password policy: the default minimum length is 8.
    let short = root_request(
        &daemon,
        "create",
        "/users/",
        json!({"name": "shorty", "role": "Monitor", "password": "abc"}),
    );
    assert_eq!(short[0]["errorcode"], 400, "{short:?}");

    // Plain HTTP refuses the API without --http-allow-api, but lets boot paths through.
    let plain = format!("http://{}", daemon.listener("http"));
    let refused = Command::new("curl")
        .args([
            "-sS",
            "-u",
            "alice:alice-secret",
            &format!("{plain}/nodes/"),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("tls_required"),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let boot = Command::new("curl")
        .args([
            "-sS",
            &format!("{plain}/boot/by-mac/00:11:22:33:44:55/boot.ipxe"),
        ])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&boot.stdout).contains("tls_required"));

    // HTTP Basic opens a session: cookie with Secure, HttpOnly, Path=/.
    let login = https.as_user("GET", "/nodes/", "alice:alice-secret", None);
    assert_eq!(login.status, 200, "{}", login.body);
    let cookie_line = login
        .headers
        .lines()
        .find(|line| line.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a session cookie");
    for attribute in ["Secure", "HttpOnly", "Path=/"] {
        assert!(cookie_line.contains(attribute), "{cookie_line}");
    }
    let session = login.session().unwrap();
    let info = https.with_session("GET", "/sessions/current/info", &session, None);
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(info.json()["username"], "alice");
    assert_eq!(info.json()["role"], "Administrator");
    assert_eq!(info.json()["sessionid"], session.as_str());
    // The cookie works as well as the header.
    let by_cookie = https.call(
        "GET",
        "/nodes/n1/attributes/current",
        &["-b", &format!("confluentsessionid={session}")],
        None,
    );
    assert_eq!(by_cookie.status, 200, "{}", by_cookie.body);

    // Wrong password and unknown user: 401 with the Basic challenge.
    let wrong = https.as_user("GET", "/nodes/", "alice:nope", None);
    assert_eq!(wrong.status, 401);
    assert!(
        wrong
            .headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"confluent\""),
        "{}",
        wrong.headers
    );
    let unknown = https.as_user("GET", "/nodes/", "mallory:whatever1", None);
    assert_eq!(unknown.status, 401);

    // A Monitor reads but may not change attributes; an Operator may not manage users.
    let monitor_read = https.as_user(
        "GET",
        "/nodes/n1/attributes/current",
        "mona:mona-secret",
        None,
    );
    assert_eq!(monitor_read.status, 200, "{}", monitor_read.body);
    let monitor_write = https.as_user(
        "PUT",
        "/nodes/n1/attributes/current",
        "mona:mona-secret",
        Some(json!({"location.rack": "7"})),
    );
    assert_eq!(monitor_write.status, 403, "{}", monitor_write.body);
    let operator_write = https.as_user(
        "PUT",
        "/noderange/n1-n2/attributes/current",
        "otto:otto-secret",
        Some(json!({"location.rack": "7"})),
    );
    assert_eq!(operator_write.status, 200, "{}", operator_write.body);
    let operator_users = https.as_user(
        "POST",
        "/users/",
        "otto:otto-secret",
        Some(json!({"name": "eve", "role": "Administrator", "password": "eve-secret"})),
    );
    assert_eq!(operator_users.status, 403, "{}", operator_users.body);
    // An Administrator may manage users over HTTPS.
    let created = https.with_session(
        "POST",
        "/users/",
        &session,
        Some(json!({"name": "bob", "role": "Monitor", "password": "bob-secret"})),
    );
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(
        https
            .as_user("GET", "/nodes/", "bob:bob-secret", None)
            .status,
        200
    );
    let changed = https.with_session(
        "PUT",
        "/users/bob",
        &session,
        Some(json!({"password": "bob-new-secret"})),
    );
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(
        https
            .as_user("GET", "/nodes/", "bob:bob-secret", None)
            .status,
        401
    );
    assert_eq!(
        https
            .as_user("GET", "/nodes/", "bob:bob-new-secret", None)
            .status,
        200
    );

    // Logout ends the session.
    let logout = https.with_session("GET", "/sessions/current/logout", &session, None);
    assert_eq!(logout.status, 200);
    assert_eq!(
        https.with_session("GET", "/nodes/", &session, None).status,
        401
    );

    // Every refusal is in the audit log, with user, operation, target and outcome.
    let records = denied_records(&daemon, |records| {
        has_record(records, "mallory", "/nodes/", 401) && has_record(records, "otto", "/users", 403)
    });
    assert!(
        has_record(&records, "alice", "/nodes/", 401),
        "{records:#?}"
    );
    assert!(
        has_record(&records, "mallory", "/nodes/", 401),
        "{records:#?}"
    );
    assert!(
        has_record(&records, "mona", "/nodes/n1/attributes/current", 403),
        "{records:#?}"
    );
    assert!(has_record(&records, "otto", "/users", 403), "{records:#?}");
    let monitor = records
        .iter()
        .find(|record| record["user"] == "mona")
        .unwrap();
    assert_eq!(monitor["detail"]["operation"], "update");
    assert_eq!(monitor["detail"]["role"], "Monitor");
    assert_eq!(monitor["detail"]["allowed"], false);
    // No password reaches the audit log.
    let everything = root_request(&daemon, "retrieve", "/events/audit", json!({}));
    let text = serde_json::to_string(&everything).unwrap();
    for secret in ["alice-secret", "mona-secret", "bob-new-secret", "whatever1"] {
        assert!(
            !text.contains(secret),
            "a password leaked into the audit log"
        );
    }

    // Users are journaled: they survive SIGKILL.
    daemon.kill();
    let daemon = DaemonProcess::start_https_only(&dir.path().join("state"), &[]);
    let https = Https::new(&daemon, dir.path());
    assert_eq!(
        https
            .as_user("GET", "/nodes/", "alice:alice-secret", None)
            .status,
        200
    );
    assert_eq!(
        https
            .as_user("GET", "/nodes/", "bob:bob-new-secret", None)
            .status,
        200
    );
    let journal = std::fs::read_dir(dir.path().join("state/etc/cfg/journal"))
        .unwrap()
        .flat_map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect::<Vec<u8>>();
    assert!(
        !String::from_utf8_lossy(&journal).contains("alice-secret"),
        "passwords are stored hashed"
    );
}

#[test]
fn sessions_expire_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start_https_only(
        &dir.path().join("state"),
        &["--session-idle-timeout", "1"],
    );
    let https = Https::new(&daemon, dir.path());
    create_user(&daemon, "carol", "Operator", "carol-secret", None);
    let login = https.as_user("GET", "/nodes/", "carol:carol-secret", None);
    let session = login.session().expect("session");
    // Sliding: requests within the timeout keep it alive.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            https.with_session("GET", "/nodes/", &session, None).status,
            200
        );
    }
    std::thread::sleep(Duration::from_millis(1600));
    let expired = https.with_session("GET", "/nodes/", &session, None);
    assert_eq!(expired.status, 401, "{}", expired.body);
    assert!(expired.body.contains("expired"), "{}", expired.body);
    let records = denied_records(&daemon, |records| {
        records
            .iter()
            .any(|record| record["detail"]["reason"] == "unknown or expired session")
    });
    assert!(
        records
            .iter()
            .any(|record| record["detail"]["reason"] == "unknown or expired session"),
        "{records:#?}"
    );
}

#[test]
fn tenant_users_see_only_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start_https_only(&dir.path().join("state"), &[]);
    let https = Https::new(&daemon, dir.path());
    root_request(&daemon, "create", "/noderange/", json!({"name": "s1"}));
    create_user(
        &daemon,
        "alice",
        "Administrator",
        "alice-secret",
        Some("acme"),
    );
    create_user(&daemon, "bob", "Administrator", "bob-secret", Some("beta"));
    create_user(&daemon, "carl", "Monitor", "carl-secret", Some("acme"));
    let alice = "acme/alice:alice-secret";
    let bob = "beta/bob:bob-secret";
    let made = https.as_user(
        "POST",
        "/noderange/",
        alice,
        Some(json!({"name": "a[1-2]"})),
    );
    assert_eq!(made.status, 200, "{}", made.body);
    let group = https.as_user(
        "POST",
        "/nodegroups/",
        alice,
        Some(json!({"name": "acmegrp"})),
    );
    assert_eq!(group.status, 200, "{}", group.body);
    assert_eq!(
        https
            .as_user(
                "POST",
                "/noderange/",
                bob,
                Some(json!({"name": "b1", "groups": "acmegrp"}))
            )
            .status,
        404,
        "a tenant may not join another tenant's group"
    );
    assert_eq!(
        https
            .as_user("POST", "/noderange/", bob, Some(json!({"name": "b1"})))
            .status,
        200
    );

    let listing = https.as_user("GET", "/nodes/", alice, None).json();
    assert_eq!(
        listing["_links"]["item"],
        json!([{"href": "a1/"}, {"href": "a2/"}]),
        "{listing}"
    );
    let everything = https.as_user(
        "GET",
        "/noderange/everything/nodes/",
        "acme/carl:carl-secret",
        None,
    );
    assert_eq!(everything.status, 200, "{}", everything.body);
    assert_eq!(
        everything.json()["_links"]["item"],
        json!([{"href": "a1/"}, {"href": "a2/"}])
    );
    // Reaching for another tenant's node: refused as if it did not exist, and audited.
    let other = https.as_user("GET", "/nodes/b1/attributes/current", alice, None);
    assert_eq!(other.status, 404, "{}", other.body);
    let other_range = https.as_user(
        "PUT",
        "/noderange/b1/attributes/current",
        alice,
        Some(json!({"location.rack": "1"})),
    );
    assert!(
        matches!(other_range.status, 400 | 404),
        "{}",
        other_range.body
    );
    let site_node = https.as_user("DELETE", "/nodes/s1", alice, None);
    assert_eq!(site_node.status, 404, "{}", site_node.body);
    // Tenants do not read the site's logs.
    assert_eq!(
        https.as_user("GET", "/events/audit", alice, None).status,
        403
    );
    // Users: each tenant sees its own.
    let users = https.as_user("GET", "/users/", alice, None).json();
    assert_eq!(
        users["_links"]["item"],
        json!([{"href": "alice"}, {"href": "carl"}]),
        "{users}"
    );
    assert_eq!(https.as_user("GET", "/users/bob", alice, None).status, 404);
    assert_eq!(
        https
            .as_user("GET", "/users/?tenant=beta", alice, None)
            .status,
        403
    );
    // The site sees every node.
    let all = root_request(&daemon, "retrieve", "/nodes/", json!({}));
    assert_eq!(all.len(), 4, "{all:?}");

    let records = denied_records(&daemon, |records| {
        has_record(records, "acme/alice", "/nodes/b1", 404)
    });
    assert!(
        has_record(&records, "acme/alice", "/nodes/b1", 404),
        "{records:#?}"
    );
    assert!(
        has_record(&records, "acme/alice", "/nodes/s1", 404),
        "{records:#?}"
    );
    let record = records
        .iter()
        .find(|record| record["user"] == "acme/alice")
        .unwrap();
    assert_eq!(record["detail"]["tenant"], "acme");
}

#[test]
fn node_api_keys_reach_only_self() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start_https_only(&dir.path().join("state"), &[]);
    let https = Https::new(&daemon, dir.path());
    root_request(
        &daemon,
        "create",
        "/noderange/",
        json!({"name": "n1", "crypted.selfapikey": "node-key-0123456789"}),
    );
    let headers = |key: &str| {
        vec![
            "-H".to_string(),
            "CONFLUENT_NODENAME: n1".to_string(),
            "-H".to_string(),
            format!("CONFLUENT_APIKEY: {key}"),
        ]
    };
    let good = headers("node-key-0123456789");
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let whoami = https.call("GET", "/self/whoami", &good, None);
    assert_eq!(whoami.status, 200, "{}", whoami.body);
    assert_eq!(whoami.json()["nodename"], "n1");
    assert_eq!(https.call("GET", "/nodes/", &good, None).status, 403);
    let bad = headers("wrong");
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    assert_eq!(https.call("GET", "/self/whoami", &bad, None).status, 401);
    let records = denied_records(&daemon, |records| {
        has_record(records, "node:n1", "/self/whoami", 401)
    });
    assert!(
        has_record(&records, "node:n1", "/self/whoami", 401),
        "{records:#?}"
    );
}

/// An OS account (and group) created for a test, removed on drop.
struct OsAccount {
    user: String,
    group: String,
}

impl OsAccount {
    fn create(password: &str) -> OsAccount {
        assert_eq!(
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() },
            0,
            "this test creates an OS account: run the suite as root (tests/run does in CI)"
        );
        let suffix = format!("{}{}", std::process::id(), rand::random::<u16>());
        let account = OsAccount {
            user: format!("cfa{suffix}"),
            group: format!("cfg{suffix}"),
        };
        let run = |program: &str, args: &[&str]| {
            let status = Command::new(program)
                .args(args)
                .status()
                .unwrap_or_else(|error| panic!("{program} is needed (passwd package): {error}"));
            assert!(status.success(), "{program} {args:?} failed");
        };
        run("groupadd", &[&account.group]);
        run(
            "useradd",
            &[
                "-M",
                "-N",
                "-g",
                "nogroup",
                "-G",
                &account.group,
                &account.user,
            ],
        );
        let mut chpasswd = Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            chpasswd.stdin.as_mut().unwrap(),
            format!("{}:{password}\n", account.user).as_bytes(),
        )
        .unwrap();
        assert!(chpasswd.wait().unwrap().success());
        // The daemon's PAM service; without it libpam would apply /etc/pam.d/other. `nodelay`
        // keeps pam_unix from sleeping two seconds on each wrong password.
        let service = std::path::Path::new("/etc/pam.d/confluent");
        if !service.exists() {
            std::fs::write(
                service,
                "# Written by the confluent test suite.\nauth required pam_unix.so nodelay\naccount required pam_unix.so\n",
            )
            .unwrap();
        }
        account
    }

    fn uid(&self) -> u32 {
        let output = Command::new("id")
            .args(["-u", &self.user])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for OsAccount {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.user).status();
        let _ = Command::new("groupdel").arg(&self.group).status();
    }
}

#[test]
fn pam_accounts_and_local_socket_users_get_roles_from_user_groups() {
    let account = OsAccount::create("os-password-1");
    let dir = tempfile::tempdir().unwrap();
    // The socket must be reachable by the OS account.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let daemon = DaemonProcess::start_https_only(&dir.path().join("state"), &[]);
    std::fs::set_permissions(
        dir.path().join("state"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let https = Https::new(&daemon, dir.path());
    root_request(&daemon, "create", "/noderange/", json!({"name": "n1"}));
    let credentials = format!("{}:os-password-1", account.user);

    // An OS account that is in no user group is not authorized, even with the right password.
    assert_eq!(
        https.as_user("GET", "/nodes/", &credentials, None).status,
        401
    );
    // Its OS group mapped to Operator through the CLI.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_confluent"))
            .args(args)
            .env("CONFLUENT_HOST", daemon.socket())
            .output()
            .unwrap()
    };
    let added = cli(&["usergroup", "add", &account.group, "--role", "operator"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let login = https.as_user("GET", "/nodes/", &credentials, None);
    assert_eq!(login.status, 200, "{}", login.body);
    let session = login.session().unwrap();
    let info = https
        .with_session("GET", "/sessions/current/info", &session, None)
        .json();
    assert_eq!(info["role"], "Operator");
    assert_eq!(info["method"], "pam");
    let wrong = https.as_user("GET", "/nodes/", &format!("{}:nope", account.user), None);
    assert_eq!(wrong.status, 401);

    // The same account on the unix socket: identified by its uid, mapped the same way.
    let as_account = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        Command::new(env!("CARGO_BIN_EXE_confluent"))
            .args(args)
            .env("CONFLUENT_HOST", daemon.socket())
            .env("HOME", dir.path())
            .uid(account.uid())
            .gid(65534)
            .output()
            .unwrap()
    };
    let listed = as_account(&["nodelist"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "n1\n");
    // A user record overrides the group: Monitor may not define nodes.
    let set = cli(&["user", "add", &account.user, "--role", "Monitor"]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let define = as_account(&["nodedefine", "n2"]);
    assert!(!define.status.success());
    // Without a user record or group the local user is refused, and that is audited.
    assert!(cli(&["user", "remove", &account.user]).status.success());
    assert!(
        cli(&["usergroup", "remove", &account.group])
            .status
            .success()
    );
    assert!(!as_account(&["nodelist"]).status.success());
    let uid = format!("uid={}", account.uid());
    let records = denied_records(&daemon, |records| {
        records.iter().any(|record| {
            record["user"] == uid.as_str() && record["detail"]["operation"] == "connect"
        })
    });
    assert!(
        records
            .iter()
            .any(|record| record["user"] == uid.as_str()
                && record["detail"]["operation"] == "connect"),
        "{records:#?}"
    );
    assert!(
        has_record(&records, &account.user, "/noderange/", 403),
        "the Monitor's refused nodedefine: {records:#?}"
    );
}

#[test]
fn cli_manages_users_and_the_tls_socket_accepts_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let daemon = DaemonProcess::start_https_only(&dir.path().join("state"), &[]);
    let cli = |args: &[&str], stdin: &str, remote: Option<(&str, &str)>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_confluent"));
        command
            .args(args)
            .env("HOME", &home)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        match remote {
            Some((user, password)) => {
                command
                    .env(
                        "CONFLUENT_HOST",
                        format!("127.0.0.1:{}", daemon.listener("tls_socket").port()),
                    )
                    .env("CONFLUENT_USER", user)
                    .env("CONFLUENT_PASSPHRASE", password);
            }
            None => {
                command.env("CONFLUENT_HOST", daemon.socket());
            }
        }
        let mut child = command.spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let added = cli(
        &["user", "add", "dana", "--role", "Adm", "--password-stdin"],
        "dana-secret\n",
        None,
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let weak = cli(
        &[
            "user",
            "add",
            "weak",
            "--role",
            "Monitor",
            "--password-stdin",
        ],
        "x\n",
        None,
    );
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 8"));
    let listed = cli(&["user", "list"], "", None);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "dana\n");
    let shown = cli(&["user", "show", "dana"], "", None);
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout),
        "dana: role: Administrator\ndana: password: set\n"
    );
    // Over the TLS socket with the password (trust on first use).
    let defined = cli(&["nodedefine", "r1"], "", Some(("dana", "dana-secret")));
    assert!(
        defined.status.success(),
        "{}",
        String::from_utf8_lossy(&defined.stderr)
    );
    let refused = cli(&["nodelist"], "", Some(("dana", "wrong-password")));
    assert!(!refused.status.success());
    let changed = cli(&["user", "set", "dana", "--role", "Monitor"], "", None);
    assert!(changed.status.success());
    let monitor = cli(&["nodedefine", "r2"], "", Some(("dana", "dana-secret")));
    assert!(!monitor.status.success());
    let removed = cli(&["user", "remove", "dana"], "", None);
    assert!(removed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&cli(&["user", "list"], "", None).stdout),
        ""
    );
}

/// One HTTP/1.1 request on a keep-alive connection; returns the status.
async fn exchange(
    stream: &mut tokio::io::BufStream<tokio::net::TcpStream>,
    request: &str,
) -> std::io::Result<u16> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(status)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn a_login_storm_does_not_slow_other_users() {
    let dir = tempfile::tempdir().unwrap();
    // Plain HTTP (allowed in this harness) so that the figure measures authentication, not TLS.
    let daemon = DaemonProcess::start(&dir.path().join("state"));
    root_request(
        &daemon,
        "create",
        "/noderange/",
        json!({"name": "n1", "location.rack": "1", "info.note": "storm"}),
    );
    create_user(&daemon, "good", "Operator", "good-secret", None);
    create_user(&daemon, "victim", "Operator", "victim-secret", None);
    let address = daemon.listener("http");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        use base64::Engine;
        let basic = |credentials: &str| base64::engine::general_purpose::STANDARD.encode(credentials);
        let connect = move || async move {
            tokio::io::BufStream::new(tokio::net::TcpStream::connect(address).await.unwrap())
        };
        // Log in once; the session carries the good user's requests.
        let mut good = connect().await;
        let login = format!(
            "GET /nodes/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\n\r\n",
            basic("good:good-secret")
        );
        assert_eq!(exchange(&mut good, &login).await.unwrap(), 200);
        let session = daemon_session(address, &basic("good:good-secret")).await;
        let request = format!(
            "GET /nodes/n1/attributes/current HTTP/1.1\r\nHost: x\r\nConfluentSession: {session}\r\n\r\n"
        );
        let timed = async |stream: &mut tokio::io::BufStream<tokio::net::TcpStream>| {
            let start = Instant::now();
            assert_eq!(exchange(stream, &request).await.unwrap(), 200);
            start.elapsed()
        };
        for _ in 0..50 {
            timed(&mut good).await;
        }
        let mut baseline = Vec::new();
        for _ in 0..300 {
            baseline.push(timed(&mut good).await);
        }
        // 1,000 wrong passwords for another user, all at once.
        let storm: Vec<_> = (0..1000)
            .map(|_| {
                let bad = format!(
                    "GET /nodes/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {}\r\n\r\n",
                    basic("victim:wrong-password")
                );
                tokio::spawn(async move {
                    let mut stream = connect().await;
                    exchange(&mut stream, &bad).await.unwrap_or(0)
                })
            })
            .collect();
        let mut during = Vec::new();
        while during.len() < 300 || !storm.iter().all(|task| task.is_finished()) {
            during.push(timed(&mut good).await);
        }
        let mut refused = 0;
        for task in storm {
            if task.await.unwrap() == 401 {
                refused += 1;
            }
        }
        assert_eq!(refused, 1000, "every bad login is refused");
        let before = median(&mut baseline);
        let storming = median(&mut during);
        eprintln!("good user's median latency: {before:?} before, {storming:?} during the storm");
        // The strict 10 % figure is the benchmark's (docs/benchmarks.md); a loaded CI machine
        // gets 5 ms of absolute slack on top.
        assert!(
            storming <= before.mul_f64(1.10) + Duration::from_millis(5),
            "median latency {before:?} became {storming:?} during the login storm"
        );
    });
}

/// Log in with Basic credentials and return the session id from the cookie.
async fn daemon_session(address: std::net::SocketAddr, basic: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET /sessions/current/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {basic}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let start =
        text.find("confluentsessionid=").expect("a session cookie") + "confluentsessionid=".len();
    let end = start + text[start..].find(';').unwrap();
    text[start..end].to_string()
}
