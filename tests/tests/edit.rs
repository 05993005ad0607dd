//! `chimectl edit`: the job's spec as a job file in `$EDITOR`, applied as `add --replace`. The
//! editor is a shell script each test writes (a `sed` that changes the file, say); what it did
//! is checked with `show --json`.

use chime_tests::{Daemon, TestUser, bin, is_root, shown, skipped};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Writes an editor: a shell script run as `EDITOR FILE`, executable by anyone.
fn editor(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `chimectl ARGS` with `EDITOR` (and no `VISUAL`).
fn with_editor(d: &Daemon, editor: &Path, args: &[&str]) -> Output {
    let mut cmd = d.ctl_command(args);
    cmd.env_remove("VISUAL")
        .env("EDITOR", editor)
        .env("CHIMECTL", bin("chimectl"));
    cmd.output().expect("run chimectl")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The spec part of `show --json`: what an edit may change.
fn spec_of(show: &Value) -> Value {
    let mut spec = serde_json::Map::new();
    for key in [
        "id",
        "name",
        "owner_uid",
        "command",
        "schedule",
        "cwd",
        "env",
        "queue",
        "count",
        "until",
        "catch_up",
        "overlap",
        "deadline_ms",
        "retries",
        "backoff_base_ms",
        "timeout_ms",
        "kill_grace_ms",
        "due_at",
    ] {
        spec.insert(key.into(), show[key].clone());
    }
    Value::Object(spec)
}

/// The path of the kept edit a refusal names (`... kept in PATH`).
fn kept_path(err: &str) -> PathBuf {
    let at = err
        .find("kept in ")
        .expect("the refusal says where the edit is")
        + "kept in ".len();
    PathBuf::from(err[at..].lines().next().unwrap().trim())
}

fn nightly(d: &Daemon) -> u64 {
    d.add(&[
        "--name",
        "nightly",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Paris",
        "--",
        "/bin/true",
    ])
}

#[test]
fn an_edit_is_applied_and_says_what_changed() {
    let d = Daemon::start();
    let id = nightly(&d);
    let before = d.show(id);
    // The editor records where it was given the file, then changes the schedule and adds a
    // timeout.
    let seen = d.dir.path().join("seen");
    let ed = editor(
        d.dir.path(),
        "ed",
        &format!(
            "stat -c '%a %U' \"$1\" \"$(dirname \"$1\")\" > {seen}\nbasename \"$1\" >> {seen}\nsed -i 's/^cron = .*/cron = \"15 4 * * *\"/' \"$1\"\necho 'timeout = \"5m\"' >> \"$1\"",
            seen = seen.display()
        ),
    );
    let out = with_editor(&d, &ed, &["edit", "nightly"]);
    assert!(out.status.success(), "{}", shown(&out));
    let seen = std::fs::read_to_string(&seen).unwrap();
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    assert_eq!(
        seen,
        format!("600 {me}\n700 {me}\nnightly.toml\n"),
        "a private file in a private directory, named after the job"
    );
    // Printed as add --replace prints it: the id, then each field that changed.
    let text = stdout(&out);
    assert!(text.starts_with(&format!("{id}\n")), "{text}");
    assert!(text.contains("\n  schedule: "), "{text}");
    assert!(text.contains("15 4 * * *"), "{text}");
    assert!(text.contains("\n  execution: "), "{text}");
    let after = d.show(id);
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["schedule"]["expr"], "15 4 * * *");
    assert_eq!(after["schedule"]["tz"], "Europe/Paris", "the zone is kept");
    assert_eq!(after["timeout_ms"], 300_000);
    assert_eq!(after["command"], before["command"]);
    assert_eq!(after["created_at"], before["created_at"], "the same job");

    // --json: the changes as add --replace --json gives them.
    let ed = editor(
        d.dir.path(),
        "ed2",
        "sed -i 's/^cron = .*/cron = \"0 5 * * *\"/' \"$1\"",
    );
    let out = with_editor(&d, &ed, &["--json", "edit", &id.to_string()]);
    assert!(out.status.success(), "{}", shown(&out));
    let reply: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(reply["id"], id);
    assert_eq!(reply["name"], "nightly");
    let changed = reply["changed"].as_array().expect("changed[]");
    assert!(
        changed
            .iter()
            .any(|c| c["field"] == "schedule" && c["to"].as_str().unwrap().contains("0 5 * * *")),
        "{reply}"
    );
    assert!(changed.iter().all(|c| c["field"] != "execution"), "{reply}");
}

#[test]
fn a_refused_edit_names_the_line_and_field_and_changes_nothing() {
    let d = Daemon::start();
    let id = nightly(&d);
    let before = spec_of(&d.show(id));
    for (body, field) in [
        ("echo 'colour = \"blue\"' >> \"$1\"", "colour"),
        (
            "sed -i 's/^cron = .*/cron = \"61 * * * *\"/' \"$1\"",
            "cron",
        ),
        ("sed -i 's/^tz = .*/tz = \"Mars\\/Olympus\"/' \"$1\"", "tz"),
    ] {
        let ed = editor(d.dir.path(), "bad", body);
        let out = with_editor(&d, &ed, &["edit", "nightly"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
        // Not a terminal: no question, the edit is kept for the user.
        assert!(!err.contains("edit again"), "{err}");
        let kept = kept_path(&err);
        let text = std::fs::read_to_string(&kept).expect("the edit is kept");
        let line = text
            .lines()
            .position(|l| l.starts_with(&format!("{field} =")))
            .expect("the edited key is in the kept file")
            + 1;
        assert!(
            err.contains(&format!("nightly.toml:{line}: {field}: ")),
            "{field}: {err}"
        );
        assert_eq!(spec_of(&d.show(id)), before, "nothing changed");
        std::fs::remove_dir_all(kept.parent().unwrap()).unwrap();
    }
    // A user's job may not say whom it runs as unless root edits it; and an edit keeps the
    // owner.
    let ed = editor(
        d.dir.path(),
        "user",
        "sed -i 's/^user = .*/user = \"nobody\"/' \"$1\"",
    );
    let out = with_editor(&d, &ed, &["edit", "nightly"]);
    if is_root() {
        assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
        assert!(
            stderr(&out).contains(": user: an edit keeps the job's owner"),
            "{}",
            shown(&out)
        );
    }
    assert_eq!(spec_of(&d.show(id)), before, "nothing changed");
}

#[test]
fn an_unchanged_or_emptied_file_applies_nothing() {
    let d = Daemon::start();
    let id = nightly(&d);
    let before = d.show(id);
    for (body, said) in [
        ("true", "no change"),
        (": > \"$1\"", "aborted: empty file"),
        ("sed -i '/^[^#]/d' \"$1\"", "aborted: empty file"),
    ] {
        let ed = editor(d.dir.path(), "ed", body);
        let out = with_editor(&d, &ed, &["edit", "nightly"]);
        assert!(out.status.success(), "{}", shown(&out));
        assert_eq!(stdout(&out), format!("{said}\n"));
        assert_eq!(d.show(id), before, "{body}: nothing changed");
    }
    // A change of comments only is sent, and leaves the job as it was.
    let ed = editor(d.dir.path(), "comment", "echo '# a note' >> \"$1\"");
    let out = with_editor(&d, &ed, &["edit", "nightly"]);
    assert!(out.status.success(), "{}", shown(&out));
    assert!(
        stdout(&out).contains(&format!("replaced job {id}: nothing changed")),
        "{}",
        shown(&out)
    );
    assert_eq!(spec_of(&d.show(id)), spec_of(&before));
}

#[test]
fn an_edit_is_refused_when_the_job_changed_meanwhile() {
    let d = Daemon::start();
    let id = nightly(&d);
    // While the file is open, someone else replaces the job's spec.
    let ed = editor(
        d.dir.path(),
        "race",
        "\"$CHIMECTL\" add --name nightly --replace --cron '45 3 * * *' --tz UTC -- /bin/true > /dev/null\nsed -i 's/^cron = .*/cron = \"15 4 * * *\"/' \"$1\"",
    );
    let out = with_editor(&d, &ed, &["edit", "nightly"]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let err = stderr(&out);
    assert!(err.contains("changed while you edited it"), "{err}");
    assert!(err.contains("kept in "), "{err}");
    let after = d.show(id);
    assert_eq!(
        after["schedule"]["expr"], "45 3 * * *",
        "the other change stands"
    );
}

#[test]
fn a_declared_job_is_edited_in_its_file() {
    let mut d = Daemon::prepare(&[]);
    d.write_job("declared", "timer = true\nevery = \"1h\"\n");
    d.launch().unwrap();
    let marker = d.dir.path().join("editor-ran");
    let ed = editor(d.dir.path(), "ed", &format!("touch {}", marker.display()));
    let out = with_editor(&d, &ed, &["edit", "declared"]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let file = d.jobs_dir().join("declared.toml");
    assert!(
        stderr(&out).contains(&format!(
            "job \"declared\" is declared in {}: edit that file and run `chimectl reload`",
            file.display()
        )),
        "{}",
        shown(&out)
    );
    assert!(!marker.exists(), "no editor is opened");
}

#[test]
fn another_users_job_is_refused_as_show_refuses_it() {
    if !is_root() {
        skipped(
            "another_users_job_is_refused_as_show_refuses_it",
            "needs root to create users",
        );
        return;
    }
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let alice = TestUser::create("edal");
    let bob = TestUser::create("edbo");
    let id = alice.add(&d, &["--name", "mine", "--every", "1h", "--", "/bin/true"]);
    let before = spec_of(&d.show(id));
    let ed = editor(
        d.dir.path(),
        "ed",
        "sed -i 's/^every = .*/every = \"2h\"/' \"$1\"",
    );
    let as_bob = |args: &[&str]| {
        let mut cmd = bob.ctl_command(&d, args);
        cmd.env_remove("VISUAL").env("EDITOR", &ed);
        cmd.output().unwrap()
    };
    let show = as_bob(&["show", &id.to_string()]);
    let edit = as_bob(&["edit", &id.to_string()]);
    assert_eq!(edit.status.code(), Some(1), "{}", shown(&edit));
    assert_eq!(stderr(&edit), stderr(&show), "refused as show is");
    assert_eq!(spec_of(&d.show(id)), before);

    // Alice may not say whom her job runs as.
    let ed_user = editor(d.dir.path(), "ed-user", "echo 'user = \"root\"' >> \"$1\"");
    let mut cmd = alice.ctl_command(&d, &["edit", "mine"]);
    cmd.env_remove("VISUAL").env("EDITOR", &ed_user);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stderr(&out).contains(": user: only root says whom a job runs as"),
        "{}",
        shown(&out)
    );
    assert_eq!(spec_of(&d.show(id)), before);

    // Root may edit it; it stays alice's.
    let out = with_editor(&d, &ed, &["edit", &id.to_string()]);
    assert!(out.status.success(), "{}", shown(&out));
    let after = d.show(id);
    assert_eq!(after["owner_uid"], alice.uid);
    assert_eq!(after["schedule"]["interval_ms"], 7_200_000);
}
