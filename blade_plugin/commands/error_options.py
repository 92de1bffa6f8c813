"""`--max-errors` values: how many items whose LLM request failed for good a run tolerates before it stops
(the option itself is a field of the job arguments in `hparams/job_args.py`)."""

from __future__ import annotations

import click


class MaxErrors(click.ParamType):
    """A count (an int >= 0; 0 stops at the first failed item) or a fraction of the items in (0, 1)."""

    name = "count|fraction"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            try:
                number = int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    self.fail(f"{value!r} is neither a count (e.g. 10) nor a fraction (e.g. 0.05)", param, ctx)
        if isinstance(number, int):
            if number < 0:
                self.fail(f"{value!r} is negative: give a count >= 0 or a fraction in (0, 1)", param, ctx)
            return number
        if not 0 < number < 1:  # also rejects nan and inf
            self.fail(f"{value!r}: a fraction must lie in (0, 1); give a whole number for a count", param, ctx)
        return number
