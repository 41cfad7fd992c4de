"""e4e_jax.train.interrupts.AbortSignals (the invert command's interrupts): a signal raises
KeyboardInterrupt at once, except inside protect(), where it waits for the block's end; the
exit status follows the signal (143 SIGTERM, 130 SIGINT or a plain KeyboardInterrupt), and the
previous handlers come back."""
import os
import signal
import time

import pytest

from e4e_jax.train.interrupts import AbortSignals


def _wait_for_handler():
    for _ in range(100):          # the handler runs at the next bytecode; give it a few
        time.sleep(0.001)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_interrupts_at_once(signum, code):
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt):
        with AbortSignals() as s:
            os.kill(os.getpid(), signum)
            _wait_for_handler()
            raise AssertionError("not interrupted")
    assert s.exit_code == code and s.name == signal.Signals(signum).name
    assert signal.getsignal(signum) is before


def test_protect_holds_the_signal_until_the_block_ends():
    written = []
    with pytest.raises(KeyboardInterrupt):
        with AbortSignals() as s:
            with s.protect():
                os.kill(os.getpid(), signal.SIGTERM)
                _wait_for_handler()
                os.kill(os.getpid(), signal.SIGINT)     # a second signal: still held
                _wait_for_handler()
                written.append("all of it")
            raise AssertionError("the held signal was not raised")
    assert written == ["all of it"]
    assert s.exit_code == 143 and s.name == "SIGTERM"   # the first signal counts


def test_a_keyboard_interrupt_without_a_signal_is_130():
    with pytest.raises(KeyboardInterrupt):
        with AbortSignals() as s:
            raise KeyboardInterrupt
    assert s.signum == 0 and s.exit_code == 130 and s.name == "SIGINT"


def test_only_the_first_signal_raises_and_hold_stops_raising():
    with AbortSignals() as s:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for_handler()
            raise AssertionError("not interrupted")
        except KeyboardInterrupt:
            os.kill(os.getpid(), signal.SIGINT)        # a second Ctrl-C while unwinding
            _wait_for_handler()
        s.hold()
        os.kill(os.getpid(), signal.SIGTERM)           # during the final writes: recorded
        _wait_for_handler()
        with s.protect():
            pass
    assert s.exit_code == 130
