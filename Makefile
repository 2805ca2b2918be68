# Two commands set up and exercise a fresh machine (see README):
#   make demo   builds every paper variant (model-zoo table), pretrains KW ResNet18 on the embedded
#               demo set, then fine-tunes and evaluates a KW Mask R-CNN on the demo COCO set
#   make test   runs the test suite
# Both create and reuse .venv (tools/setup_env.sh; mmcv is built once per machine).
VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.kw_mm_installed
DEMO_DATA := data/demo
CLS_CFG   := configs/demo/kw1x-resnet18_demo-cls.py
DET_CFG   := configs/demo/mask-rcnn_kw-r18_demo-coco.py
CLS_DIR   := work_dirs/demo_cls
DET_DIR   := work_dirs/demo_det

.PHONY: venv demo demo-zoo demo-data demo-cls demo-det test bench clean-demo

venv: $(STAMP)

$(STAMP): tools/setup_env.sh requirements/runtime.txt requirements/tests.txt setup.py
	bash tools/setup_env.sh

demo: venv demo-zoo demo-data demo-cls demo-det

demo-zoo: venv
	$(PY) tools/analysis/model_zoo.py

demo-data: venv
	$(PY) tools/make_demo_data.py --out $(DEMO_DATA)

demo-cls: venv demo-data
	$(PY) tools/train.py $(CLS_CFG) --work-dir $(CLS_DIR)
	$(PY) tools/test.py $(CLS_CFG) $$(cat $(CLS_DIR)/last_checkpoint) --work-dir $(CLS_DIR)/test

demo-det: venv demo-data
	$(PY) tools/train.py $(DET_CFG) --work-dir $(DET_DIR) \
		--cfg-options model.backbone.init_cfg.checkpoint=$$(cat $(CLS_DIR)/last_checkpoint)
	$(PY) tools/test.py $(DET_CFG) $$(cat $(DET_DIR)/last_checkpoint) --work-dir $(DET_DIR)/test

test: venv
	$(PY) -m pytest -q tests

bench: venv
	$(PY) tools/analysis/benchmark.py --preset paper-cpu --with-reference

clean-demo:
	rm -rf $(CLS_DIR) $(DET_DIR) $(DEMO_DATA)
