import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildWithManifest(build_py):
    """Ship the repository's weights_manifest.json inside the installed package (editable
    installs read the root file directly)."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "agcnn_zoo" / "weights_manifest.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).parent / "weights_manifest.json", target)


setup(
    name="agcnn-zoo",
    version="0.1.0",
    description="Model zoo and verified pretrained weights for attentive group-equivariant CNNs "
                "(Romero et al., ICML 2020)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["agcnn_zoo", "agcnn_zoo.*"]),
    # embedded weights (the ``package`` host kind): small safetensors files shipped in wheels
    package_data={"agcnn_zoo": ["weights/*.safetensors"]},
    include_package_data=True,
    cmdclass={"build_py": BuildWithManifest},
    install_requires=[
        "torch>=2.1,<=2.14.1",
        "torchvision>=0.16,<=0.29.1",
        "huggingface_hub>=0.20",
        "safetensors>=0.4",
        "timm>=0.9",
        "tqdm",
        "numpy",
    ],
    extras_require={
        "test": ["pytest"],
        "pcam": ["h5py"],
        "plot": ["matplotlib"],
        "onnx": ["onnx", "onnxruntime"],
    },
    entry_points={"console_scripts": ["agcnn-zoo=agcnn_zoo.__main__:main"]},
)
