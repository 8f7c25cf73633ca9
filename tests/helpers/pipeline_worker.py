"""Run by tests/training/test_pipelines.py in a fresh process: zoo members through stock `transformers.pipeline`,
loaded from their checkpoint folders by path, with nothing of this project imported.

Usage: pipeline_worker.py JOBS.json REPORT.json. JOBS holds checkpoint folders and the raw test data (images as .npy
files of uint8 (N, H, W) arrays, made into PIL images here; texts as strings); REPORT gets what each pipeline gave:
accuracies of classifiers, what the stock loaders did with an MLP-head member, output shapes.
"""

import json
import sys
import traceback

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    ViTForImageClassification,
    pipeline,
)

BATCH = 64


def _images(path: str) -> list:
    return [Image.fromarray(array) for array in np.load(path)]


def _top(item):
    """The top prediction of one input (a list of predictions, best first, or one)."""
    return item[0] if isinstance(item, list) else item


def _accuracy(outputs, labels: list[int], names: list[str]) -> dict:
    """Accuracy, predictions and every label's probability (outputs: each input's `top_k=len(names)` list)."""
    probs = [[next(c["score"] for c in item if c["label"] == name) for name in names] for item in outputs]
    predicted = [names.index(_top(item)["label"]) for item in outputs]
    return {"acc": float(np.mean(np.asarray(predicted) == np.asarray(labels))), "predicted": predicted,
            "probs": probs}


def image_classification(job: dict) -> dict:
    classify = pipeline("image-classification", model=job["checkpoint"])
    names = job["label_names"]
    outputs = classify(_images(job["images"]), top_k=len(names), batch_size=BATCH)
    return {**_accuracy(outputs, job["labels"], names), "processor": type(classify.image_processor).__name__}


def _attempt(load) -> dict:
    try:
        load()
    except Exception as err:  # noqa: BLE001 - what the user sees, whatever it is
        return {"raised": True, "error": f"{type(err).__name__}: {err}"[:4000]}
    return {"raised": False}


def mlp_head_by_hand(path: str):
    """docs/loading-members.md: an MLP-head member in plain torch (the stock model with its head replaced)."""
    from safetensors.torch import load_file

    model = ViTForImageClassification.from_pretrained(path, ignore_mismatched_sizes=True)  # the head is replaced
    hidden, config = model.config.zoo_head["hidden_size"], model.config
    head = torch.nn.Sequential(torch.nn.Linear(config.hidden_size, hidden), torch.nn.GELU(),
                               torch.nn.Linear(hidden, config.num_labels))
    state = load_file(f"{path}/model.safetensors")
    head.load_state_dict({"0.weight": state["classifier.weight"], "0.bias": state["classifier.bias"],
                          "2.weight": state["classifier.out.weight"], "2.bias": state["classifier.out.bias"]})
    model.classifier = head
    return model.eval()


def mlp_head(job: dict) -> dict:
    path, image = job["checkpoint"], _images(job["images"])[:1]
    report = {
        "ViTForImageClassification": _attempt(lambda: ViTForImageClassification.from_pretrained(path)),
        "AutoModelForImageClassification": _attempt(lambda: AutoModelForImageClassification.from_pretrained(path)),
        "pipeline": _attempt(lambda: pipeline("image-classification", model=path)(image)),
        "AutoModel": type(AutoModel.from_pretrained(path)).__name__,
    }
    classify = pipeline("image-classification", model=mlp_head_by_hand(path),
                        image_processor=AutoImageProcessor.from_pretrained(path))
    names = job["label_names"]
    report["by_hand"] = {**_accuracy(classify(_images(job["images"]), top_k=len(names), batch_size=BATCH),
                                     job["labels"], names), "processor": type(classify.image_processor).__name__}
    return report


def feature_extraction(job: dict) -> dict:
    extract = pipeline("image-feature-extraction", model=job["checkpoint"])
    features = [np.asarray(extract(image)) for image in _images(job["images"])[:2]]
    return {"model": type(extract.model).__name__, "shape": list(features[0].shape),
            "finite": bool(np.isfinite(features[0]).all()), "differ": bool(np.abs(features[0] - features[1]).max() > 0)}


def text_classification(job: dict) -> dict:
    classify = pipeline("text-classification", model=job["checkpoint"])
    names = job["label_names"]
    report = _accuracy(classify(job["texts"], truncation=True, top_k=len(names), batch_size=BATCH), job["labels"],
                       names)
    report["model_max_length"] = classify.tokenizer.model_max_length
    report["long"] = _top(classify(job["long_text"], truncation=True))["label"]
    return report


def fill_mask(job: dict) -> dict:
    fill = pipeline("fill-mask", model=job["checkpoint"])
    text = job["text"].replace("<mask>", fill.tokenizer.mask_token)
    candidates = fill(text)
    long = fill(text + " " + job["long_text"], tokenizer_kwargs={"truncation": True})
    return {"model": type(fill.model).__name__, "n": len(candidates), "scores": [c["score"] for c in candidates],
            "tokens": [c["token_str"] for c in candidates], "long_n": len(long),
            "model_max_length": fill.tokenizer.model_max_length}


def text_generation(job: dict) -> dict:
    generate = pipeline("text-generation", model=job["checkpoint"])
    prompt = job["prompt"]
    greedy = generate(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    default = generate(prompt, return_tensors=True)[0]["generated_token_ids"]  # the pipeline's own defaults
    long = generate(job["long_text"], max_new_tokens=4, do_sample=False, handle_long_generation="hole",
                    return_tensors=True)[0]["generated_token_ids"]
    return {"model": type(generate.model).__name__, "greedy": greedy, "default_tokens": len(default),
            "prompt_tokens": len(generate.tokenizer(prompt)["input_ids"]), "long_tokens": len(long),
            "model_max_length": generate.tokenizer.model_max_length,
            "padding_side": generate.tokenizer.padding_side}


TASKS = {"image_classification": image_classification, "mlp_head": mlp_head,
         "feature_extraction": feature_extraction, "text_classification": text_classification,
         "fill_mask": fill_mask, "text_generation": text_generation}


def main(jobs_file: str, report_file: str) -> None:
    jobs = json.loads(open(jobs_file).read())
    report = {}
    for name, job in jobs.items():
        try:
            report[name] = TASKS[job["task"]](job)
        except Exception:  # noqa: BLE001 - reported per job, the others still run
            report[name] = {"failed": traceback.format_exc()[-3000:]}
    report["zoo_imported"] = any(module == "zoo" or module.startswith("zoo.") for module in sys.modules)
    with open(report_file, "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(*sys.argv[1:3])
