"""The paper's ImageNet models: one entry per row of Tables 1, 2 and 4 (and Table 14's layouts).

Each entry says how to build the model in mmpretrain (backbone / neck / head for 1000 classes),
the parameter count printed in the paper, and the name of the matching model of the reference
release (``official``; its layout and state-dict keys are in ``tests/data/official_kw``).
Everything here is data taken from the paper and the reference layouts; the model zoo table,
the tests and the checkpoint converter read it.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass(frozen=True)
class PaperVariant:
    """One ImageNet model of the paper."""

    name: str
    family: str  # 'resnet18' | 'resnet50' | 'mobilenet-v2' | 'mobilenet-v2-w0.5' | 'convnext-tiny'
    budget: Optional[float]  # the paper's b; None for the plain baseline
    backbone: dict
    head: dict
    neck: Optional[dict] = None
    paper_params_m: float = 0.0  # total parameters printed in the paper (M)
    official: Optional[str] = None  # model name of the reference release, if released
    note: str = ''
    setting: str = ''  # the ablation setting (Tables 5-9, 13) or layout; '' for a main row
    table: str = ''  # the paper table the row is from

    @property
    def release_params(self) -> Optional[int]:
        """Exact parameter count of the released reference model (None if not released)."""
        return RELEASE_PARAMS.get(self.official) if self.official else None

    def model_cfg(self, num_classes: int = 1000) -> dict:
        """An mmpretrain ``ImageClassifier`` config for ``num_classes`` classes."""
        head = dict(self.head, num_classes=num_classes)
        cfg = dict(type='mmpretrain.ImageClassifier', backbone=dict(self.backbone), head=head)
        if self.neck is not None:
            cfg['neck'] = dict(self.neck)
        return cfg


def _label(budget: Optional[float]) -> str:
    if budget is None:
        return ''
    names = {0.25: 'kw1d4x', 0.5: 'kw1d2x', 0.75: 'kw3d4x', 1.0: 'kw1x', 2.0: 'kw2x', 4.0: 'kw4x'}
    return names[budget]


_CLS_LOSS = dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0)
_GAP = dict(type='mmpretrain.GlobalAveragePooling')


def _resnet(depth: int, budget: Optional[float], paper_m: float, note: str = '',
            setting: str = '', table: str = '', **knobs) -> PaperVariant:
    """A ResNet row; ``setting`` and ``knobs`` make it an ablation row (not released)."""
    channels = 512 if depth == 18 else 2048
    if budget is None:
        backbone = dict(type='mmpretrain.ResNet', depth=depth, num_stages=4, out_indices=(3, ),
                        style='pytorch')
    else:
        backbone = dict(type='kw_mm.KWResNet', depth=depth, budget=budget, out_indices=(3, ),
                        **knobs)
    name = f'{_label(budget)}_resnet{depth}' if budget else f'resnet{depth}'
    official = None if setting else name
    if setting:
        name = f'{name}_{setting}'
    return PaperVariant(name, f'resnet{depth}', budget, backbone,
                        dict(type='mmpretrain.LinearClsHead', in_channels=channels,
                             loss=_CLS_LOSS, topk=(1, 5)),
                        neck=_GAP, paper_params_m=paper_m, official=official, note=note,
                        setting=setting, table=table)


def _mobilenet_v2(widen: float, budget: Optional[float], paper_m: float) -> PaperVariant:
    suffix = '100' if widen == 1.0 else '050'
    family = 'mobilenet-v2' if widen == 1.0 else 'mobilenet-v2-w0.5'
    if budget is None:
        backbone = dict(type='mmpretrain.MobileNetV2', widen_factor=widen)
    else:
        backbone = dict(type='kw_mm.KWMobileNetV2', widen_factor=widen, budget=budget)
    if budget == 0.5:
        # The 1/2x classifier is a KWLinear with a warehouse of 1000x32 cells (paper A.3).
        head = dict(type='kw_mm.KWLinearClsHead', in_channels=1280, loss=_CLS_LOSS, topk=(1, 5))
    else:
        head = dict(type='mmpretrain.LinearClsHead', in_channels=1280, loss=_CLS_LOSS,
                    topk=(1, 5))
    name = f'{_label(budget)}_mobilenetv2_{suffix}' if budget else f'mobilenetv2_{suffix}'
    return PaperVariant(name, family, budget, backbone, head, neck=_GAP, paper_params_m=paper_m,
                        official=name)


def _convnext(budget: Optional[float], paper_m: float, layout: str = 'paper',
              official: Optional[str] = None, note: str = '') -> PaperVariant:
    if budget is None:
        backbone = dict(type='mmpretrain.ConvNeXt', arch='tiny', gap_before_final_norm=True)
        name = 'convnext_tiny'
    else:
        backbone = dict(type='kw_mm.KWConvNeXt', arch='tiny', budget=budget, layout=layout)
        name = f'{_label(budget)}_convnext_tiny' + ('_release' if layout == 'release' else '')
    head = dict(type='mmpretrain.LinearClsHead', in_channels=768, loss=_CLS_LOSS, topk=(1, 5))
    return PaperVariant(name, 'convnext-tiny', budget, backbone, head, paper_params_m=paper_m,
                        official=official, note=note)


PAPER_VARIANTS: List[PaperVariant] = [
    _resnet(18, None, 11.69),
    _resnet(18, 0.25, 4.08, note='the release gives 4.03M; no nearby setting gives 4.08M'),
    _resnet(18, 0.5, 7.43),
    _resnet(18, 1.0, 11.93),
    _resnet(18, 2.0, 23.24),
    _resnet(18, 4.0, 45.86),
    _resnet(50, None, 25.56),
    _resnet(50, 0.5, 17.64),
    _resnet(50, 1.0, 28.05),
    _resnet(50, 4.0, 102.02),
    _mobilenet_v2(1.0, None, 3.50),
    _mobilenet_v2(1.0, 0.5, 2.65),
    _mobilenet_v2(1.0, 1.0, 5.17),
    _mobilenet_v2(1.0, 4.0, 11.38),
    _mobilenet_v2(0.5, None, 1.97),
    _mobilenet_v2(0.5, 0.5, 1.47),
    _mobilenet_v2(0.5, 1.0, 2.85),
    _mobilenet_v2(0.5, 4.0, 4.65),
    _convnext(None, 28.59, official='convnext_tiny'),
    _convnext(0.75, 24.53, note="Table 14 layout; the paper's 24.53M is not reproducible with the "
              'reference attention design (see README)'),
    _convnext(1.0, 32.99, note="Table 14 layout (16 warehouses); the paper's 32.99M is not "
              'reproducible with the reference attention design (see README)'),
    _convnext(1.0, 39.37, layout='release', official='kw1x_convnext_tiny',
              note='released layout (12 warehouses)'),
]

def _deit(arch: str, budget: Optional[float], paper_m: float, note: str = '') -> PaperVariant:
    """A DeiT row of Table 11 (the paper's KW DeiT models were not released)."""
    channels = {'deit-tiny': 192, 'deit-small': 384}[arch]
    if budget is None:
        backbone = dict(type='mmpretrain.VisionTransformer', arch=arch, img_size=224,
                        patch_size=16)
    else:
        backbone = dict(type='kw_mm.KWVisionTransformer', arch=arch, budget=budget,
                        img_size=224, patch_size=16)
    head = dict(type='mmpretrain.VisionTransformerClsHead', in_channels=channels,
                loss=_CLS_LOSS, topk=(1, 5))
    name = f'{_label(budget)}_{arch}' if budget else arch
    return PaperVariant(name.replace('-', '_'), arch, budget, backbone, head,
                        paper_params_m=paper_m, note=note, table='T11')


_DEIT_CLOSEST = "no layout of the reference design gives the paper's {}M (README, KW DeiT)"

#: Paper Table 11: DeiT with KW value and MLP layers (``layout='kind'``, see README).
DEIT_VARIANTS: List[PaperVariant] = [
    _deit('deit-tiny', None, 5.72),
    _deit('deit-tiny', 1.0, 6.39),
    _deit('deit-tiny', 4.0, 20.44, note=_DEIT_CLOSEST.format(20.44)),
    _deit('deit-small', None, 22.06,
          note="mmpretrain's DeiT-Small has 22.05M, as its model zoo lists (README, KW DeiT)"),
    _deit('deit-small', 0.75, 19.23, note=_DEIT_CLOSEST.format(19.23)),
    _deit('deit-small', 1.0, 24.36),
]

#: The ablation rows of the paper (Tables 5-9 and 13), all on the 300-epoch recipe.
ABLATION_VARIANTS: List[PaperVariant] = [
    _resnet(18, 1.0, 11.78, setting='no-partition', table='T5', partition=False),
    _resnet(18, 1.0, 11.81, setting='share-layer', table='T6', sharing_range='within-layer'),
    _resnet(18, 1.0, 11.78, setting='share-none', table='T6', sharing_range='none'),
    _resnet(50, 1.0, 26.95, setting='share-same-dim', table='T7', sharing_range='same-dim'),
    _resnet(18, 1.0, 11.93, setting='attn-softmax', table='T8', attention_function='softmax'),
    _resnet(18, 1.0, 11.93, setting='attn-sigmoid', table='T8', attention_function='sigmoid'),
    _resnet(18, 1.0, 11.93, setting='attn-relu-l1', table='T8', attention_function='relu-l1'),
    _resnet(18, 1.0, 11.93, setting='init-none', table='T9/T13', init_strategy='none'),
    _resnet(18, 1.0, 11.93, setting='init-all-cells', table='T13', init_strategy='all-to-one'),
    _resnet(18, 4.0, 45.86, setting='init-4-cells', table='T13', init_strategy='many-to-one'),
    _resnet(18, 0.5, 7.43, setting='init-2-mixtures', table='T13',
            init_strategy='one-to-many'),
]

#: Every row the model zoo prints: the main tables, Table 11 and the ablations.
ALL_VARIANTS: List[PaperVariant] = PAPER_VARIANTS + DEIT_VARIANTS + ABLATION_VARIANTS

#: Total parameters of the reference release's models (read off the reference implementation).
RELEASE_PARAMS: Dict[str, int] = {
    'resnet18': 11689512, 'kw1d4x_resnet18': 4031768, 'kw1d2x_resnet18': 7431044,
    'kw1x_resnet18': 11932148, 'kw2x_resnet18': 23242127, 'kw4x_resnet18': 45862085,
    'resnet50': 25557032, 'kw1d2x_resnet50': 17638264, 'kw1x_resnet50': 28052310,
    'kw4x_resnet50': 102015144,
    'mobilenetv2_100': 3504872, 'kw1d2x_mobilenetv2_100': 2654396,
    'kw1x_mobilenetv2_100': 5168146, 'kw4x_mobilenetv2_100': 11379382,
    'mobilenetv2_050': 1968680, 'kw1d2x_mobilenetv2_050': 1466888,
    'kw1x_mobilenetv2_050': 2854522, 'kw4x_mobilenetv2_050': 4648587,
    'convnext_tiny': 28589128, 'kw1x_convnext_tiny': 39370674,
}

VARIANTS_BY_NAME: Dict[str, PaperVariant] = {v.name: v for v in ALL_VARIANTS}


def get_variant(name: str) -> PaperVariant:
    """The variant called ``name`` (e.g. ``'kw1x_resnet50'``)."""
    if name not in VARIANTS_BY_NAME:
        raise KeyError(f'unknown paper variant {name!r}; choose from {sorted(VARIANTS_BY_NAME)}')
    return VARIANTS_BY_NAME[name]


#: Paper Table 14 m and n per warehouse for the layouts the release does not include.
TABLE14_CONVNEXT = {
    1.0: dict(m=[16, 4, 4, 4] + [147, 24] * 6, n=[16, 4, 4, 4] + [147, 24] * 6),
    0.75: dict(m=[16, 4, 4, 4] + [147, 24] * 4 + [147, 96] * 2,
               n=[16, 4, 4, 4] + [147, 24] * 4 + [147, 48] * 2),
}
