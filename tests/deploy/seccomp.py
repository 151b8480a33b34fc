"""Run a command under an OCI seccomp profile, the way a container runtime applies it.

    python -m tests.deploy.seccomp PROFILE.json -- COMMAND [ARGS...]

The profile is compiled with libseccomp (what runc and crun use), `no_new_privs` is set (as
`allowPrivilegeEscalation: false` does) and the command is exec'd, so it and every process it
starts run under the filter. Unknown syscall names are skipped, as runc skips them.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any

_ACTIONS = {"SCMP_ACT_ALLOW": 0x7FFF0000, "SCMP_ACT_ERRNO": 0x00050000}
_OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
_ARCHES = {"SCMP_ARCH_X86_64": b"x86_64", "SCMP_ARCH_X86": b"x86", "SCMP_ARCH_X32": b"x32"}
_PR_SET_NO_NEW_PRIVS = 38


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _action(name: str, errno: int) -> int:
    if name == "SCMP_ACT_ERRNO":
        return _ACTIONS[name] | (errno & 0xFFFF)
    return _ACTIONS[name]


def load(profile: dict[str, Any]) -> None:
    """Install `profile` as the calling process's seccomp filter (irreversible)."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    default_errno = int(profile.get("defaultErrnoRet", 1))
    ctx = lib.seccomp_init(_action(profile["defaultAction"], default_errno))
    assert ctx, "seccomp_init failed"
    for arch in profile.get("architectures", []):
        lib.seccomp_arch_add(ctx, lib.seccomp_arch_resolve_name(_ARCHES[arch]))  # EEXIST is fine
    for rule in profile["syscalls"]:
        action = _action(rule["action"], int(rule.get("errnoRet", default_errno)))
        args = rule.get("args") or []
        cmps = (_ArgCmp * max(len(args), 1))(
            *(_ArgCmp(a["index"], _OPS[a["op"]], a["value"], a.get("valueTwo", 0)) for a in args)
        )
        for name in rule["names"]:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # unknown to this libseccomp
            rc = lib.seccomp_rule_add_array(ctx, action, number, len(args), cmps)
            assert rc == 0, f"seccomp_rule_add_array({name}) = {rc}"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "prctl(NO_NEW_PRIVS) failed"
    assert lib.seccomp_load(ctx) == 0, "seccomp_load failed"


def main(argv: list[str]) -> None:
    profile_path, separator, *command = argv
    assert separator == "--" and command, __doc__
    with open(profile_path) as f:
        load(json.load(f))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
