from hfplug import hookimpl


@hookimpl
def register_losses(register):
    register("twice", lambda **kw: None)
    register("twice", lambda **kw: None)
