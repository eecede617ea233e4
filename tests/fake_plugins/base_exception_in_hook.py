from hfplug import hookimpl


class PluginAbort(BaseException):
    pass


@hookimpl
def register_losses(register):
    raise PluginAbort("gave up")
