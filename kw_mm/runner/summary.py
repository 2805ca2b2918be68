"""Human-readable summaries of evaluation metrics (printed by ``tools/test.py``)."""
from typing import Mapping, Optional

#: Headline metrics, in the order they are printed: metric key -> label.
HEADLINES = {
    'accuracy/top1': 'top-1 accuracy (%)',
    'accuracy/top5': 'top-5 accuracy (%)',
    'coco/bbox_mAP': 'box AP',
    'coco/segm_mAP': 'mask AP',
}


def format_metrics(metrics: Mapping[str, float], title: str = '',
                   num_classes: Optional[int] = None) -> str:
    """A table of every metric with the headline numbers (top-1, box/mask AP) on top.

    Args:
        metrics (Mapping[str, float]): What ``Runner.test()`` returns.
        title (str): First line. Defaults to ''.
        num_classes (int, optional): For classification, adds the chance level of top-1.

    Returns:
        str: The formatted text.

    Example:
        >>> print(format_metrics({'accuracy/top1': 90.0}, 'demo', num_classes=6))
        ==== demo ====
        top-1 accuracy (%): 90.00  (6 classes, chance 16.67)
        ...
    """
    lines = [f'==== {title} ====' if title else '==== results ====']
    for key, label in HEADLINES.items():
        if key in metrics:
            line = f'{label}: {float(metrics[key]):.2f}'
            if key == 'accuracy/top1' and num_classes:
                line += f'  ({num_classes} classes, chance {100.0 / num_classes:.2f})'
            lines.append(line)
    width = max((len(k) for k in metrics), default=0)
    lines.append('all metrics:')
    for key, value in metrics.items():
        shown = f'{value:.4f}' if isinstance(value, float) else str(value)
        lines.append(f'  {key:<{width}}  {shown}')
    return '\n'.join(lines)
