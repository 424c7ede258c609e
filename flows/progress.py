"""Progress callbacks the command line installs for flows running in this process.

They live here, not in the flow modules: a process task runner pickles a flow module's
globals along with its tasks, and a live progress bar cannot be pickled."""

hooks: dict = {}


def report(name: str, *args) -> None:
    hook = hooks.get(name)
    if hook is not None:
        hook(*args)
