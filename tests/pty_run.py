"""Run a command with its stdout and stderr on a pseudo-terminal, as a user at a terminal sees it."""
import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time


def run_in_pty(args, cwd, env, timeout=120, columns=120):
    """(exit status, everything the terminal received, as text) of `args` run on a fresh pty."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:        # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        else:
            proc.kill()
            raise TimeoutError(f"{args} ran past {timeout} s")
        return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", errors="replace")
    finally:
        os.close(master)
