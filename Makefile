# Two commands set up and exercise a fresh machine (see README.md and docs/install.md):
#   make demo   builds every paper variant (model-zoo table), pretrains KW ResNet18 on the embedded
#               demo set, then fine-tunes and evaluates a KW Mask R-CNN on the demo COCO set, and
#               draws pictures: detections and the KW attention maps (work_dirs/demo_*/vis/)
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

.PHONY: venv demo demo-zoo demo-data demo-cls demo-det demo-vis test bench gpu-check clean-demo

venv: $(STAMP)

$(STAMP): tools/setup_env.sh requirements/runtime.txt requirements/tests.txt setup.py
	bash tools/setup_env.sh

demo: venv demo-zoo demo-data demo-cls demo-det demo-vis

demo-zoo: venv
	@echo '== make demo [1/5] model zoo: every paper variant built and counted (about 1 min)'
	$(PY) tools/analysis/model_zoo.py

demo-data: venv
	@echo '== make demo [2/5] demo data sets under $(DEMO_DATA)'
	$(PY) tools/make_demo_data.py --out $(DEMO_DATA)

demo-cls: venv demo-data
	@echo '== make demo [3/5] KW 1x ResNet18 pretraining with the temperature anneal (about 6 min)'
	$(PY) tools/train.py $(CLS_CFG) --work-dir $(CLS_DIR)
	$(PY) tools/test.py $(CLS_CFG) $$(cat $(CLS_DIR)/last_checkpoint) --work-dir $(CLS_DIR)/test

demo-det: venv demo-data
	@test -f $(CLS_DIR)/last_checkpoint || { echo "demo-det starts from the pretraining \
	checkpoint $(CLS_DIR)/last_checkpoint, which does not exist: run make demo-cls first" >&2; exit 2; }
	@echo '== make demo [4/5] KW Mask R-CNN fine-tuning and COCO evaluation (about 5 min)'
	$(PY) tools/train.py $(DET_CFG) --work-dir $(DET_DIR) \
		--cfg-options model.backbone.init_cfg.checkpoint=$$(cat $(CLS_DIR)/last_checkpoint)
	$(PY) tools/test.py $(DET_CFG) $$(cat $(DET_DIR)/last_checkpoint) --work-dir $(DET_DIR)/test

demo-vis: venv demo-data
	@test -f $(DET_DIR)/last_checkpoint || { echo "demo-vis draws the checkpoints of make demo-cls \
	and make demo-det, run them first" >&2; exit 2; }
	@echo '== make demo [5/5] pictures: detections on validation images, KW attention maps'
	$(PY) tools/analysis/vis_detections.py $(DET_CFG) $$(cat $(DET_DIR)/last_checkpoint) \
		--out-dir $(DET_DIR) --num-images 4 --score-thr 0.05
	$(PY) tools/analysis/vis_attention.py $(CLS_CFG) $$(cat $(CLS_DIR)/last_checkpoint) \
		--out $(CLS_DIR)/vis

test: venv
	$(PY) -m pytest -q tests

# The speed tables of docs/speed_and_memory.md: eager PyTorch (with the limits and the load
# ratio), the exported models in ONNX Runtime, compiled models, and training under AMP; each also
# written as markdown.
bench: venv
	@mkdir -p work_dirs/bench
	$(PY) tools/analysis/benchmark.py --preset paper-cpu --with-reference --load \
		--markdown work_dirs/bench/eager.md
	$(PY) tools/analysis/benchmark.py --preset paper-cpu --onnx --markdown work_dirs/bench/onnx.md
	$(PY) tools/analysis/benchmark.py --preset paper-cpu --compile \
		--markdown work_dirs/bench/compiled.md
	$(PY) tools/analysis/benchmark.py --preset paper-cpu --amp --markdown work_dirs/bench/amp.md

# On a CUDA machine: KW layers and backbones against the CPU oracle, AMP training steps, and the
# paper's Tables 12 and 16 measured side by side (tools/analysis/gpu_check.py).
gpu-check: venv
	$(PY) tools/analysis/gpu_check.py --markdown gpu_check.md

clean-demo:
	rm -rf $(CLS_DIR) $(DET_DIR) $(DEMO_DATA)
