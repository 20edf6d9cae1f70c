"""torch.hub entry points: one per registered model.

    torch.hub.load("path/to/this/folder", "a_p4cnn_rotmnist", source="local", pretrained=True)
    torch.hub.load("OWNER/REPO", "a_p4cnn_rotmnist", pretrained=True)  # OWNER/REPO: a placeholder
                                                                        # until it is published

A folder needs ``source="local"`` (torch.hub otherwise reads the string as a GitHub owner/name).
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
