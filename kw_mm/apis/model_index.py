"""The model index: every config of the paper's models and the numbers the paper prints.

The index is ``model-index.yml`` (OpenMMLab's metafile format, importing
``configs/metafile.yml``), shipped inside the package as ``kw_mm/.mim/`` together with the
configs, so an installed kw_mm finds both without a source checkout. It is the single source of
truth for the paper's variants: the model-zoo table, the benchmark's plain twins, the converter's
variant detection and the documentation's model-zoo tables read it.

Two views of one file:

* :class:`ModelInfo`, one per config (``kw1x-resnet18_8xb32_in1k``);
* :class:`Variant`, one per architecture of the paper (``kw1x_resnet18``), which the configs of
  several recipes share (its first config in the index builds it).

Example:
    >>> from kw_mm.apis import model_index
    >>> model_index.get_model('kw1x-resnet50_8xb512-300e_in1k').release_name
    'kw1x_resnet50'
    >>> model_index.get_variant('kw4x_resnet18').baseline.name
    'resnet18'
"""
import os.path as osp
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Dict, List, Optional

from .configs import model_of_config, read_config

#: Where the package keeps its index and configs (``kw_mm/.mim``: copied by ``pip install .``,
#: symbolic links to the repository's files in a source checkout).
MIM_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '.mim')
INDEX_FILE = osp.join(MIM_DIR, 'model-index.yml')


@dataclass(frozen=True)
class ModelInfo:
    """One model (config) of the index.

    Args:
        name (str): The config's name without ``.py`` (``kw1x-resnet18_8xb32_in1k``).
        collection (str): ``In Collection`` (``KernelWarehouse``, ``Baselines``, ``Demo``).
        config (str): The config path inside the index (``configs/....py``).
        config_path (str): The config file on disk.
        metadata (dict): ``Metadata`` as written in the index.
        results (list): ``Results`` as written (the paper's numbers).
    """

    name: str
    collection: str
    config: str
    config_path: str
    metadata: dict = field(default_factory=dict, compare=False)
    results: list = field(default_factory=list, compare=False)

    @property
    def variant(self) -> Optional[str]:
        """The paper architecture this config builds (ImageNet models only)."""
        return self.metadata.get('Variant')

    @property
    def backbone_variant(self) -> Optional[str]:
        """The ImageNet variant of a detector's backbone (detection models only)."""
        return self.metadata.get('Backbone Variant')

    @property
    def plain_twin_name(self) -> Optional[str]:
        """The name of the baseline config a KW config is compared with."""
        return self.metadata.get('Plain Twin')

    @property
    def release_name(self) -> Optional[str]:
        return self.metadata.get('Release Name')

    def metric(self, name: str) -> Optional[float]:
        """A metric of :attr:`results` (``'Top 1 Accuracy'``, ``'box AP'``, ``'mask AP'``)."""
        for result in self.results:
            if name in (result.get('Metrics') or {}):
                return result['Metrics'][name]
        return None

    @property
    def paper_table(self) -> Optional[str]:
        """The paper's table the results come from (``'Table 1'``)."""
        return next((r.get('Paper Table') for r in self.results if r.get('Paper Table')), None)


@dataclass(frozen=True)
class Variant:
    """One architecture of the paper (a row of Tables 1, 2 and 4), shared by its configs.

    Args:
        name (str): kw_mm's name (``kw1x_resnet18``; ``resnet18`` for a baseline).
        models (list[ModelInfo]): The configs building it, in index order.
    """

    name: str
    models: List[ModelInfo] = field(compare=False)

    @property
    def _meta(self) -> dict:
        return self.models[0].metadata

    @property
    def family(self) -> str:
        """The plain network: ``resnet18``, ``resnet50``, ``mobilenet-v2``,
        ``mobilenet-v2-w0.5`` or ``convnext-tiny``."""
        return self._meta['Family']

    @property
    def budget_label(self) -> Optional[str]:
        """The budget as the paper writes it (``'1/4x'``); None for the baseline."""
        return self._meta.get('Budget')

    @property
    def budget(self) -> Optional[float]:
        """The budget b as a number (0.25 for ``'1/4x'``); None for the baseline."""
        label = self.budget_label
        return None if label is None else float(Fraction(label.rstrip('x')))

    @property
    def is_kw(self) -> bool:
        return self.budget_label is not None

    @property
    def layout(self) -> Optional[str]:
        return self._meta.get('Layout')

    @property
    def official(self) -> Optional[str]:
        """The model name of the reference release, if it was released."""
        return self._meta.get('Release Name')

    @property
    def label(self) -> str:
        """The release's name if released, else kw_mm's name."""
        return self.official or self.name

    @property
    def params(self) -> int:
        """Parameters of the 1000-class classifier as measured (the index records them)."""
        return self._meta['Parameters']

    @property
    def flops(self) -> Optional[int]:
        return self._meta.get('FLOPs')

    @property
    def paper_params_m(self) -> float:
        return self._meta['Paper Parameters (M)']

    @property
    def release_params(self) -> Optional[int]:
        return self._meta.get('Release Parameters')

    @property
    def table14(self) -> Optional[dict]:
        """Table 14's ``{'m': [...], 'n': [...]}`` where the index records it."""
        return self._meta.get('Warehouses (Table 14)')

    @property
    def note(self) -> str:
        return self._meta.get('Note', '')

    @property
    def setting(self) -> str:
        """The ablation setting (``'attn-softmax'``) of an ablation row, '' otherwise."""
        return self._meta.get('Setting', '')

    @property
    def config_path(self) -> str:
        """The config file that builds this variant (the first of :attr:`models`)."""
        return self.models[0].config_path

    @property
    def baseline(self) -> 'Variant':
        """The plain variant of this variant's family (itself for a baseline)."""
        twin = self.models[0].plain_twin_name
        return self if twin is None else get_model_index().variant_of(twin)

    def model_cfg(self, num_classes: int = 1000) -> dict:
        """The classifier of :attr:`config_path` (backbone, neck and head; no training-time
        batch augments or data preprocessor) for ``num_classes`` classes."""
        cfg = model_of_config(read_config(self.config_path))
        arch = {k: cfg[k] for k in ('type', 'backbone', 'neck', 'head') if k in cfg}
        arch['head'] = dict(arch['head'], num_classes=num_classes)
        return arch

    @property
    def backbone(self) -> dict:
        return self.model_cfg()['backbone']


class ModelIndex:
    """The parsed index (see the module docstring); build it with :func:`get_model_index`."""

    def __init__(self, models: List[ModelInfo], collections: List[dict]) -> None:
        self.models: Dict[str, ModelInfo] = {}
        for info in models:
            if info.name in self.models:
                raise ValueError(f'model {info.name!r} appears twice in the model index')
            self.models[info.name] = info
        self.collections = collections
        grouped: Dict[str, List[ModelInfo]] = {}
        for info in models:
            if info.variant:
                grouped.setdefault(info.variant, []).append(info)
        self.variants: Dict[str, Variant] = {n: Variant(n, m) for n, m in grouped.items()}
        # The ablation rows (Tables 5-9, 13): one config each, kept apart from the variants so
        # that the converter's detection and the per-family lists see only the paper's models.
        self.ablations: Dict[str, Variant] = {
            info.metadata['Ablation']: Variant(info.metadata['Ablation'], [info])
            for info in models if info.metadata.get('Ablation')}

    def get_model(self, name: str) -> ModelInfo:
        """The model called ``name`` (its config name without ``.py``)."""
        if name not in self.models:
            raise KeyError(f'unknown model {name!r}; the model index has {sorted(self.models)}')
        return self.models[name]

    def by_config(self, path: str) -> Optional[ModelInfo]:
        """The model whose config file is called like ``path`` (any directory), or None."""
        name = osp.splitext(osp.basename(path))[0]
        return self.models.get(name) if path.endswith('.py') else None

    def get_variant(self, name: str) -> Variant:
        """A paper variant by kw_mm name (``kw1x_convnext_tiny_release``) or released name."""
        if name in self.variants:
            return self.variants[name]
        if name in self.ablations:
            return self.ablations[name]
        released = [v for v in self.variants.values() if v.official == name]
        if len(released) == 1:
            return released[0]
        raise KeyError(f'unknown variant {name!r}; choose from {sorted(self.variants)} '
                       f'(or a released name: {sorted(self.release_names())})')

    def variant_of(self, model_name: str) -> Variant:
        """The paper variant that the config ``model_name`` builds."""
        info = self.get_model(model_name)
        if info.variant is None:
            raise KeyError(f'model {model_name!r} is not an ImageNet model of the paper')
        return self.variants[info.variant]

    def release_names(self) -> List[str]:
        return [v.official for v in self.variants.values() if v.official]


def _read_yaml(path: str) -> dict:
    import yaml
    with open(path) as f:
        return yaml.safe_load(f) or {}


def load_model_index(index_file: str = INDEX_FILE) -> ModelIndex:
    """Parse ``index_file`` and the metafiles it imports (paths relative to it).

    Raises:
        FileNotFoundError: If the index or a config it names is missing, naming the file.
    """
    if not osp.isfile(index_file):
        raise FileNotFoundError(f'model index {index_file} not found (kw_mm/.mim is made by '
                                'setup.py: reinstall kw_mm, or run from a git checkout)')
    root = osp.dirname(index_file)
    models, collections = [], []
    for metafile in _read_yaml(index_file).get('Import', []):
        data = _read_yaml(osp.join(root, metafile))
        collections.extend(data.get('Collections', []))
        for entry in data.get('Models', []):
            # Symbolic links (a source checkout's kw_mm/.mim) resolved: messages and tools show
            # the file users know.
            config_path = osp.realpath(osp.join(root, entry['Config']))
            if not osp.isfile(config_path):
                raise FileNotFoundError(f'model {entry["Name"]} of {metafile}: config '
                                        f'{config_path} not found')
            models.append(ModelInfo(entry['Name'], entry.get('In Collection', ''),
                                    entry['Config'], config_path, entry.get('Metadata') or {},
                                    entry.get('Results') or []))
    return ModelIndex(models, collections)


@lru_cache(maxsize=None)
def get_model_index() -> ModelIndex:
    """The package's index (parsed once per process)."""
    return load_model_index()


def list_models() -> List[str]:
    """Every model (config) name of the index, in index order."""
    return list(get_model_index().models)


def get_model(name: str) -> ModelInfo:
    """The model called ``name`` (a config name without ``.py``)."""
    return get_model_index().get_model(name)


def get_config_path(name: str) -> str:
    """The config file of the model ``name`` inside the installed package."""
    return get_model(name).config_path


def list_variants() -> List[Variant]:
    """The paper's ImageNet variants, in the index's order."""
    return list(get_model_index().variants.values())


def list_ablations() -> List[Variant]:
    """The ablation rows of the paper (Tables 5-9 and 13), in the index's order."""
    return list(get_model_index().ablations.values())


def get_variant(name: str) -> Variant:
    """A paper variant by kw_mm name or by the reference release's name."""
    return get_model_index().get_variant(name)
