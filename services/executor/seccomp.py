"""The sandbox's system-call filters (seccomp BPF), built here and installed by `zygote`.

Three filters, stacked (the kernel runs every one on every call; any one can refuse):

* `kernel_surface` (once, in the zygote; every sandbox inherits it): refuses the kernel
  surfaces a test program has no use for and that could outlive an execution, reach another
  one or help an escape: keyrings, SysV IPC and POSIX message queues (objects that outlive
  their process by design, with per-namespace id counters), bpf, perf_event_open,
  userfaultfd, io_uring, new user namespaces, mount and friends, ptrace and reading or writing
  another process's memory, modules, kexec, reboot, the clock, ... It also refuses every way
  a program could make one of its processes die "by SIGSYS" (sending it, timers, F_SETSIG, a
  clone exit signal), so that a death by SIGSYS is a fact only `candidate_rules` can produce.
* `sandbox_rules` (once, in the zygote once its own privileged set-up is over, and in each
  judge after its own): also refuses mount, unshare, namespaces in clone and hostname changes.
* `candidate_rules` (per candidate, once its job's memory limit is known; `CandidateFilter`):
  kills the process (SIGSYS) when it asks for a single mapping larger than its memory limit:
  that mapping could never be used, and the kill is an unforgeable `memory_limit` where a
  refused allocation would only be a MemoryError the program can print itself. It also
  refuses CLONE_PARENT, which the zygote forks candidates with: a process a candidate made
  with it would be its worker's child, outside the candidate's tree, never reaped, holding a
  pid of the candidates' namespace into the next execution. A few instructions, so that
  installing it costs a candidate little.

Refusals are EPERM (ENOSYS for clone3, so that glibc falls back to clone, whose flags a filter
can read). x86-64 only; a call through another ABI (int 0x80, x32) is refused.
"""

from __future__ import annotations

import ctypes
import errno
import signal
import socket
import struct

from codeprm.services.executor import linux

# -- BPF ------------------------------------------------------------------------------------

_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = seccomp_data[k]
_JEQ, _JGT, _JSET = 0x15, 0x25, 0x45  # BPF_JMP | op | BPF_K
_AND = 0x54  # BPF_ALU | BPF_AND | BPF_K
_RET = 0x06  # BPF_RET | BPF_K

_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000
_EPERM = _ERRNO | errno.EPERM
_ENOSYS = _ERRNO | errno.ENOSYS

_NR, _ARCH = 0, 4  # offsets in struct seccomp_data
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000

Instruction = tuple[int, int, int, int]  # code, jump if true, jump if false, k


def _arg_lo(index: int) -> int:
    return 16 + 8 * index  # little-endian: the low 32 bits of args[index]


def _arg_hi(index: int) -> int:
    return 16 + 8 * index + 4


def _ld(offset: int) -> Instruction:
    return (_LD_W_ABS, 0, 0, offset)


def _ret(action: int) -> Instruction:
    return (_RET, 0, 0, action)


def _when(nr: int, block: list[Instruction]) -> list[Instruction]:
    """Run `block` (which must end in a return) for system call `nr`; skip it otherwise.
    The accumulator holds the call number on entry and on a skip."""
    assert block[-1][0] == _RET and len(block) < 256
    return [(_JEQ, 0, len(block), nr), *block]


def _refuse(nr: int, action: int = _EPERM) -> list[Instruction]:
    return _when(nr, [_ret(action)])


def _refuse_if_arg_is(nr: int, arg: int, value: int) -> list[Instruction]:
    return _when(nr, [_ld(_arg_lo(arg)), (_JEQ, 0, 1, value), _ret(_EPERM), _ret(_ALLOW)])


def _refuse_if_arg_has(nr: int, arg: int, bits: int) -> list[Instruction]:
    return _when(nr, [_ld(_arg_lo(arg)), (_JSET, 0, 1, bits), _ret(_EPERM), _ret(_ALLOW)])


def _program(rules: list[Instruction]) -> list[Instruction]:
    return [
        _ld(_ARCH),
        (_JEQ, 1, 0, _AUDIT_ARCH_X86_64),
        _ret(_EPERM),
        _ld(_NR),
        (_JSET, 0, 1, _X32_BIT),
        _ret(_EPERM),
        *rules,
        _ret(_ALLOW),
    ]


# -- x86-64 system call numbers ---------------------------------------------------------------

NR = {
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "shmdt": 67,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
    "fcntl": 72,
    "ptrace": 101,
    "syslog": 103,
    "rt_sigqueueinfo": 129,
    "uselib": 134,
    "personality": 135,
    "modify_ldt": 154,
    "pivot_root": 155,
    "prctl": 157,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "nfsservctl": 180,
    "tkill": 200,
    "io_setup": 206,
    "io_destroy": 207,
    "io_getevents": 208,
    "io_submit": 209,
    "io_cancel": 210,
    "lookup_dcookie": 212,
    "semtimedop": 220,
    "timer_create": 222,
    "clock_settime": 227,
    "tgkill": 234,
    "mq_open": 240,
    "mq_unlink": 241,
    "mq_timedsend": 242,
    "mq_timedreceive": 243,
    "mq_notify": 244,
    "mq_getsetattr": 245,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "migrate_pages": 256,
    "unshare": 272,
    "move_pages": 279,
    "rt_tgsigqueueinfo": 297,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "prlimit64": 302,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "pidfd_send_signal": 424,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount_setattr": 442,
    "quotactl_fd": 443,
    "memfd_secret": 447,
    "process_mrelease": 448,
    "kill": 62,
    "socket": 41,
    "clone": 56,
    "mmap": 9,
    "mremap": 25,
}

# Refused outright: no test program needs them, and each is either state that outlives the
# process (keyrings, AIO contexts), a way into another process or the kernel, or host-wide.
REFUSED = (
    # state outside the process that outlives it, or a channel to another execution: keys,
    # SysV IPC objects and POSIX message queues live on after their process, and their ids
    # come from counters of the namespace (which every candidate of a worker shares)
    "add_key", "request_key", "keyctl",
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semtimedop", "semctl",
    "msgget", "msgsnd", "msgrcv", "msgctl",
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_getsetattr",
    # kernel attack surface
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "io_setup", "io_destroy", "io_getevents", "io_submit", "io_cancel",
    "modify_ldt", "uselib", "personality", "lookup_dcookie", "fanotify_init",
    "name_to_handle_at", "open_by_handle_at", "memfd_secret",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "process_madvise", "process_mrelease", "migrate_pages", "move_pages",
    # namespaces and mounts (the sandbox's own set-up is done before its first filter)
    "setns", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    # the host
    "syslog", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "swapon",
    "swapoff", "reboot", "iopl", "ioperm", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "quotactl", "quotactl_fd", "nfsservctl",
    # ways to be sent a signal of one's choice (see the module docstring)
    "timer_create", "mq_notify",
)  # fmt: skip

_SIGNAL_ARG = {  # system call: which argument is the signal number
    "kill": 1,
    "tkill": 1,
    "tgkill": 2,
    "rt_sigqueueinfo": 1,
    "rt_tgsigqueueinfo": 2,
    "pidfd_send_signal": 1,
}
_F_SETSIG = 10
_PR_SET_PDEATHSIG = 1
_CSIGNAL = 0xFF  # the low byte of clone's flags: the signal sent to the parent at exit
_NAMESPACES = (
    linux.CLONE_NEWNS
    | linux.CLONE_NEWUTS
    | linux.CLONE_NEWIPC
    | linux.CLONE_NEWUSER
    | linux.CLONE_NEWPID
    | linux.CLONE_NEWNET
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x00000080  # CLONE_NEWTIME
)


def kernel_surface() -> list[Instruction]:
    """The zygote's filter (see the module docstring)."""
    sigsys = int(signal.SIGSYS)
    rules: list[Instruction] = []
    for name in REFUSED:
        rules += _refuse(NR[name])
    rules += _refuse(NR["clone3"], _ENOSYS)
    # unshare: the zygote makes its sandboxes' pid namespace after this filter; a new user
    # namespace is the one an unprivileged process could make (each sandbox refuses all).
    rules += _refuse_if_arg_has(NR["unshare"], 0, linux.CLONE_NEWUSER)
    for name, arg in _SIGNAL_ARG.items():
        rules += _refuse_if_arg_is(NR[name], arg, sigsys)
    rules += _refuse_if_arg_is(NR["fcntl"], 1, _F_SETSIG)
    # prctl(PR_SET_PDEATHSIG, SIGSYS)
    rules += _when(
        NR["prctl"],
        [
            _ld(_arg_lo(0)),
            (_JEQ, 0, 3, _PR_SET_PDEATHSIG),
            _ld(_arg_lo(1)),
            (_JEQ, 0, 1, sigsys),
            _ret(_EPERM),
            _ret(_ALLOW),
        ],
    )
    # Socket families: local and IP ones only (the network namespace has no route anyway);
    # AF_ALG, AF_VSOCK, AF_TIPC, AF_RDS and the like are kernel surface with no use here.
    allowed = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)
    rules += _when(
        NR["socket"],
        [
            _ld(_arg_lo(0)),
            *((_JEQ, len(allowed) - i, 0, int(family)) for i, family in enumerate(allowed)),
            _ret(_ERRNO | errno.EAFNOSUPPORT),
            _ret(_ALLOW),
        ],
    )
    # Limits of another process (same uid, same sandbox): only one's own.
    rules += _when(NR["prlimit64"], [_ld(_arg_lo(0)), (_JEQ, 1, 0, 0), _ret(_EPERM), _ret(_ALLOW)])
    # clone: no new user namespace (the one namespace an unprivileged process may create),
    # no SIGSYS as the exit signal.
    rules += _when(
        NR["clone"],
        [
            _ld(_arg_lo(0)),
            (_JSET, 0, 1, linux.CLONE_NEWUSER),
            _ret(_EPERM),
            (_AND, 0, 0, _CSIGNAL),
            (_JEQ, 0, 1, sigsys),
            _ret(_EPERM),
            _ret(_ALLOW),
        ],
    )
    return _program(rules)


def _larger_than(arg: int, limit_hi: int, limit_lo: int) -> list[Instruction]:
    """args[arg] > limit (64-bit) → kill the process; else allow. Returns a block."""
    return [
        _ld(_arg_hi(arg)),
        (_JGT, 4, 0, limit_hi),  # → kill
        (_JEQ, 0, 4, limit_hi),  # high word below the limit's → allow
        _ld(_arg_lo(arg)),
        (_JGT, 1, 0, limit_lo),  # → kill
        _ret(_ALLOW),
        _ret(_KILL_PROCESS),
        _ret(_ALLOW),
    ]


def sandbox_rules() -> list[Instruction]:
    """What a sandbox may no longer do once its own set-up is over (see the module docstring)."""
    rules: list[Instruction] = []
    for name in ("mount", "umount2", "sethostname", "setdomainname", "unshare"):
        rules += _refuse(NR[name])
    rules += _refuse_if_arg_has(NR["clone"], 0, _NAMESPACES)
    return _program(rules)


def candidate_rules(memory_bytes: int) -> list[Instruction]:
    """A candidate's own: no CLONE_PARENT, and no single mapping beyond its memory limit (see
    the module docstring)."""
    hi, lo = memory_bytes >> 32, memory_bytes & 0xFFFFFFFF
    rules = _refuse_if_arg_has(NR["clone"], 0, linux.CLONE_PARENT)
    # mmap(addr, length, prot, ...): a PROT_NONE mapping only reserves addresses (glibc
    # reserves 128 MiB per thread arena that way); RLIMIT_AS bounds those.
    larger = _larger_than(1, hi, lo)
    rules += _when(NR["mmap"], [_ld(_arg_lo(2)), (_JEQ, len(larger) - 1, 0, 0), *larger])
    rules += _when(NR["mremap"], _larger_than(2, hi, lo))  # mremap(old, old_len, new_len)
    return _program(rules)


# -- installing -------------------------------------------------------------------------------


class Filter:
    """A BPF program held in memory that is ready to install (made ahead, in the zygote: a
    freshly forked sandbox only patches a constant and makes the call)."""

    def __init__(self, instructions: list[Instruction]) -> None:
        self.instructions = instructions
        self._buffer = ctypes.create_string_buffer(8 * len(instructions))
        for i, instruction in enumerate(instructions):
            struct.pack_into("HBBI", self._buffer, 8 * i, *instruction)
        self._program = linux.SockFprog(len(instructions), ctypes.addressof(self._buffer))

    def install(self) -> None:
        linux.seccomp_set_filter(self._program)


class CandidateFilter(Filter):
    """`candidate_rules`, with the memory limit written in just before it is installed."""

    _HI, _LO = 0xFFFFFF01, 0xFFFFFF02  # placeholders, never left in an installed filter

    def __init__(self) -> None:
        super().__init__(candidate_rules((self._HI << 32) | self._LO))
        self._slots = [
            (8 * i + 4, k == self._HI)
            for i, (_, _, _, k) in enumerate(self.instructions)
            if k in (self._HI, self._LO)
        ]

    def install_with_limit(self, memory_bytes: int) -> None:
        hi, lo = memory_bytes >> 32, memory_bytes & 0xFFFFFFFF
        for offset, is_hi in self._slots:
            struct.pack_into("I", self._buffer, offset, hi if is_hi else lo)
        self.install()
