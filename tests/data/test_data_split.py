from edgepipe.data.sources import Listing
from edgepipe.data.split import class_counts, make_split


def _listing(n_per_class=50, classes=4, with_test=False):
    samples = [(f"c{c}/{i}", c) for c in range(classes) for i in range(n_per_class)]
    if with_test:
        return Listing(
            [f"c{c}" for c in range(classes)],
            {"train": samples, "test": [(f"t{c}/{i}", c) for c in range(classes) for i in range(5)]},
        )
    return Listing([f"c{c}" for c in range(classes)], {"all": samples})


def test_split_is_deterministic_stratified_and_disjoint():
    a = make_split(_listing(), seed=1, val_fraction=0.1, test_fraction=0.1)
    b = make_split(_listing(), seed=1, val_fraction=0.1, test_fraction=0.1)
    assert a == b
    assert class_counts(a["val"], 4) == [5, 5, 5, 5] and class_counts(a["test"], 4) == [5, 5, 5, 5]
    refs = [set(r for r, _ in a[p]) for p in ("train", "val", "test")]
    assert not (refs[0] & refs[1] or refs[0] & refs[2] or refs[1] & refs[2])
    assert sum(len(r) for r in refs) == 200
    assert make_split(_listing(), seed=2, val_fraction=0.1, test_fraction=0.1)["val"] != a["val"]


def test_split_keeps_the_datasets_own_test_split():
    s = make_split(_listing(with_test=True), seed=0, val_fraction=0.2, test_fraction=0.1)
    assert all(r.startswith("t") for r, _ in s["test"]) and len(s["test"]) == 20
    assert len(s["val"]) == 40 and len(s["train"]) == 160


def test_limit_per_class_subsamples_each_part():
    s = make_split(_listing(with_test=True), seed=0, val_fraction=0.1, test_fraction=0.1, limit_per_class=10)
    assert class_counts(s["train"], 4) == [10] * 4
    assert all(0 < c <= 5 for c in class_counts(s["test"], 4))
