from hfplug import hookimpl

SAVED = []


@hookimpl
def register_losses(register):
    register("early_loss", lambda **kw: None)
    SAVED.append(register)


def register_late():
    """Called by the test after loading: a saved register must not be a silent no-op."""
    SAVED[0]("late_loss", lambda **kw: None)
