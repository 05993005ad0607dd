//! No program may be executed by the fuzzing process.
//!
//! The fuzzer submits jobs, and chimed runs a job that comes due: its command is whatever the
//! fuzzer made of the bytes, and the fuzzer usually runs as root. So before the daemon starts,
//! the process installs a seccomp filter that makes `execve` and `execveat` fail with `EPERM`,
//! for this thread and every thread and process started after it. chimed itself is unchanged:
//! every run it starts ends as a spawn error (`permission denied`), which is one of the paths the
//! fuzzer is meant to explore, and a check helper (`__check-as`) fails the same way.
//!
//! It is installed on the first input, not in libFuzzer's initialisation: libFuzzer's own parent
//! process (`-fork`, `-jobs`, `-merge`) starts its workers with `system(3)` and never runs an
//! input, and must keep the right to.

use std::io;

/// `AUDIT_ARCH_*` of the architectures the filter knows (from `<linux/audit.h>`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Offsets into `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

/// On x86_64, system calls with this bit are the x32 ABI's: all refused.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Refuses `execve` and `execveat` to this thread and everything it starts from now on, then
/// checks that executing `/bin/true` fails.
///
/// Errors: the kernel refused the filter, or a program could still be executed; the caller must
/// not go on.
#[allow(unsafe_code)]
pub fn forbid_exec() -> io::Result<()> {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, SECCOMP_RET_ALLOW,
        SECCOMP_RET_ERRNO,
    };
    let deny = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let filter = [
        // A system call of another architecture (x86's int 0x80): refused.
        statement(BPF_LD | BPF_W | BPF_ABS, ARCH_OFFSET),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
        statement(BPF_RET | BPF_K, deny),
        statement(BPF_LD | BPF_W | BPF_ABS, NR_OFFSET),
        jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_execve as u32, 3, 0),
        jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_execveat as u32, 2, 0),
        jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 1, 0),
        statement(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        statement(BPF_RET | BPF_K, deny),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments; PR_SET_SECCOMP reads `program`, which points to
    // `filter`, both alive for the call (the kernel copies the filter).
    let installed = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ) == 0
    };
    if !installed {
        return Err(io::Error::last_os_error());
    }
    match std::process::Command::new("/bin/true").status() {
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => Ok(()),
        Err(err) => Err(io::Error::other(format!(
            "executing /bin/true failed with {err}, not EPERM: is the filter in force?"
        ))),
        Ok(_) => Err(io::Error::other(
            "/bin/true could still be executed: the filter is not in force",
        )),
    }
}
