from hfplug import hookimpl


@hookimpl
def register_losses(register):
    return [("returned", lambda **kw: None)]
