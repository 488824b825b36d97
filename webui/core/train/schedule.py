"""A1111 ``learn_schedule.py``: learning rates (and clipping values) given as ``"0.005:100, 1e-3:1000, 1e-5"``.

Each ``rate:step`` pair holds until that step; a bare rate (or ``rate:-1``) holds to the end. Pairs whose step is
already behind ``cur_step`` (a resumed training) are skipped, a step beyond ``max_steps`` is cut to it. Unlike
A1111, which fails with a bare ValueError deep in the job, a malformed schedule is refused up front with
:class:`ScheduleError` naming the part that is wrong.
"""

from __future__ import annotations

import math


class ScheduleError(ValueError):
    """A learning-rate schedule that cannot be read."""


def parse_schedule(text: str | float, max_steps: int, cur_step: int = 0) -> list[tuple[float, int]]:
    """A1111 ``LearnScheduleIterator``: the (rate, end step) pairs still ahead of ``cur_step``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError("the schedule is empty")
    pairs = [_parse_pair(pair) for pair in text.split(",")]  # every part checked, also those A1111 never reaches
    rates: list[tuple[float, int]] = []
    for rate, step in pairs:
        if step is not None:
            if step > cur_step:
                rates.append((rate, min(step, max_steps)))
                if step > max_steps:
                    return rates
            elif step == -1:
                rates.append((rate, max_steps))
                return rates
        else:
            rates.append((rate, max_steps))
            return rates
    if not rates:
        raise ScheduleError(f"no rate left after step {cur_step} (every 'rate:step' ends at or before it)")
    return rates


def _parse_pair(pair: str) -> tuple[float, int | None]:
    parts = pair.split(":")
    if len(parts) > 2:
        raise ScheduleError(f"{pair.strip()!r}: expected 'rate' or 'rate:step'")
    try:
        rate = float(parts[0])
    except ValueError:
        raise ScheduleError(f"{pair.strip()!r}: {parts[0].strip()!r} is not a number") from None
    if not math.isfinite(rate) or rate < 0:
        raise ScheduleError(f"{pair.strip()!r}: the rate must be a finite number >= 0")
    if len(parts) == 1:
        return rate, None
    try:
        return rate, int(parts[1])
    except ValueError:
        raise ScheduleError(f"{pair.strip()!r}: {parts[1].strip()!r} is not a whole step number") from None


class LearnRateScheduler:
    """A1111 ``LearnRateScheduler``: the current rate, moved on when the step reaches its end step; ``finished``
    once the last pair is used up."""

    def __init__(self, learn_rate: str | float, max_steps: int, cur_step: int = 0):
        self._rates = iter(parse_schedule(learn_rate, max_steps, cur_step))
        self.learn_rate, self.end_step = next(self._rates)
        self.finished = False

    def step(self, step_number: int) -> bool:
        if step_number < self.end_step:
            return False
        try:
            self.learn_rate, self.end_step = next(self._rates)
        except StopIteration:
            self.finished = True
            return False
        return True

    def apply(self, optimizer, step_number: int) -> None:
        if self.step(step_number):
            for group in optimizer.param_groups:
                group["lr"] = self.learn_rate
