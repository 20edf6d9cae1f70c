"""torch.hub entry points: one per registered model.

    torch.hub.load('<this repo or its folder>', 'a_p4cnn_rotmnist', pretrained=True)
"""
dependencies = ["torch", "torchvision", "safetensors", "huggingface_hub"]


def _make_entrypoint(name):
    def entrypoint(pretrained: bool = False, **kwargs):
        from agcnn_zoo import create_model
        return create_model(name, pretrained=pretrained, **kwargs)
    return entrypoint


def _register_entrypoints():
    from agcnn_zoo.registry import get_entry, list_registered
    from agcnn_zoo.hub.manifest import load_manifest
    published = load_manifest()["weights"]
    for name in list_registered():
        entry = get_entry(name)
        fn = _make_entrypoint(name)
        fn.__name__ = fn.__qualname__ = name
        weights = "pretrained=True loads its verified weights" if name in published else \
            "no published weights (pretrained=True raises)"
        fn.__doc__ = (f"{entry.architecture} for {entry.dataset} ({weights}).\n\n"
                      f"{entry.description}")
        globals()[name] = fn


_register_entrypoints()
