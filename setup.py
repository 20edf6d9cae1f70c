"""Only the build step pyproject.toml cannot declare: the manifest lives at the repository root
(tests, tools and the other engineer's code read it there) and is copied into the built package,
where an installed ``agcnn_zoo.hub.manifest`` finds it. Metadata: pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithManifest(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "agcnn_zoo" / "weights_manifest.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).parent / "weights_manifest.json", target)


setup(cmdclass={"build_py": BuildWithManifest})
