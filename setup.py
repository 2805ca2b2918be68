import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

#: Shipped inside the package as kw_mm/.mim (as mmpretrain and mmdet ship theirs), so an
#: installed kw_mm finds its model index and configs. In the repository kw_mm/.mim holds
#: symbolic links to these (an editable install or a checkout uses them as they are).
MIM_FILES = ('model-index.yml', 'configs')


def read_version() -> str:
    scope: dict = {}
    with open('kw_mm/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


class BuildWithMim(build_py):
    """Copies the targets of kw_mm/.mim's links into the build (real files, not links)."""

    def run(self) -> None:
        super().run()
        target = os.path.join(self.build_lib, 'kw_mm', '.mim')
        for name in MIM_FILES:
            dst = os.path.join(target, name)
            if os.path.islink(dst) or os.path.isfile(dst):
                os.remove(dst)
            elif os.path.isdir(dst):
                shutil.rmtree(dst)
            os.makedirs(target, exist_ok=True)
            if os.path.isdir(name):
                shutil.copytree(name, dst, ignore=shutil.ignore_patterns('__pycache__'))
            else:
                shutil.copyfile(name, dst)


setup(
    name='kw_mm',
    version=read_version(),
    description='KernelWarehouse dynamic convolution for mmpretrain and mmdet',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['kw_mm', 'kw_mm.*']),
    cmdclass={'build_py': BuildWithMim},
    python_requires='>=3.9',
    # mmcv (with ops) is built from source by tools/setup_env.sh; see docs/install.md.
    install_requires=['torch', 'mmengine>=0.10,<1.0', 'mmpretrain>=1.2', 'mmdet>=3.3', 'pyyaml'],
    license='Apache-2.0',
)
