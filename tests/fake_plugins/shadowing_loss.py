from hfplug import hookimpl


@hookimpl
def register_losses(register):
    def own_loss(**kwargs):
        return lambda outputs, labels, num_items_in_batch=None: 0

    register("scaled_ce", own_loss)  # also registered by tests/fake_plugins/complete.py
    register("own_loss", own_loss)
