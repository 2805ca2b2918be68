from setuptools import find_packages, setup


def read_version() -> str:
    scope: dict = {}
    with open('kw_mm/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='kw_mm',
    version=read_version(),
    description='KernelWarehouse dynamic convolution for mmpretrain and mmdet',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['kw_mm', 'kw_mm.*']),
    python_requires='>=3.9',
    # mmcv (with ops) is built from source by tools/setup_env.sh; see README "Install".
    install_requires=['torch', 'mmengine>=0.10,<1.0', 'mmpretrain>=1.2', 'mmdet>=3.3'],
    license='Apache-2.0',
)
