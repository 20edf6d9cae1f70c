"""torch.hub entry points: one per registered model.

    torch.hub.load("path/to/this/folder", "a_p4cnn_rotmnist", source="local", pretrained=True)
    torch.hub.load("OWNER/REPO", "a_p4cnn_rotmnist", pretrained=True)  # OWNER/REPO: a placeholder
                                                                        # until it is published

A folder needs ``source="local"`` (torch.hub otherwise reads the string as a GitHub owner/name).
``tag="..."`` picks another weight of the model (``zoo.list_pretrained("NAME*")`` lists them).
"""
dependencies = ["torch", "torchvision", "safetensors", "huggingface_hub"]


def _make_entrypoint(name):
    def entrypoint(pretrained: bool = False, tag: str = None, **kwargs):
        # tag: another weight of this model (``NAME.TAG``), e.g. tag="rotgen12k_s0"
        from agcnn_zoo import create_model
        from agcnn_zoo.hub.weight_id import WeightId
        return create_model(str(WeightId.of(name, tag)), pretrained=pretrained, **kwargs)
    return entrypoint


def _register_entrypoints():
    from agcnn_zoo.hub.catalogue import catalogue
    from agcnn_zoo.registry import get_entry, list_registered
    cat = catalogue()
    for name in list_registered():
        entry = get_entry(name)
        fn = _make_entrypoint(name)
        fn.__name__ = fn.__qualname__ = name
        default_id = cat.default_of(name)
        weights = f"pretrained=True loads its verified weights {default_id}" if default_id else \
            "no published weights (pretrained=True raises)"
        fn.__doc__ = (f"{entry.model_class} for {entry.dataset} ({weights}).\n\n"
                      f"{entry.description}")
        globals()[name] = fn


_register_entrypoints()
