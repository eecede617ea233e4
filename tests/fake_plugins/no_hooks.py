def register_losses(register):  # no @hfplug.hookimpl: pluggy does not see it
    register("forgotten", lambda **kw: None)
