from hfplug import hookimpl


@hookimpl
def register_losses(register, extra):
    pass
