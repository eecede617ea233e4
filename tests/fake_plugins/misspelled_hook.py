from hfplug import hookimpl


@hookimpl
def register_loss(register):
    register("typo", lambda **kw: None)
