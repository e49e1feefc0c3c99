import numpy as np
import pytest

from flowjax_thesis.data.tabular import load_sklearn, load_tabular


def test_sklearn_fallback_is_standardised_and_labelled():
    d = load_tabular("power", directory=None)
    assert "breast_cancer" in d.source and "power" in d.source
    assert d.train.shape[1] == d.val.shape[1] == d.test.shape[1] == 30
    assert len(d.train) + len(d.val) + len(d.test) == 569
    np.testing.assert_allclose(d.train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.train.std(0), 1, atol=1e-4)
    assert d.train.dtype == np.float32


def test_user_directory_and_errors(tmp_path):
    folder = tmp_path / "gas"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("val", 10), ("test", 20)):
        np.save(folder / f"{split}.npy", rng.normal(size=(n, 8)))
    d = load_tabular("GAS", directory=str(tmp_path))
    assert d.dim == 8 and len(d.test) == 20 and str(folder) in d.source
    with pytest.raises(FileNotFoundError):
        load_tabular("hepmass", directory=str(tmp_path), fallback=False)
    with pytest.raises(ValueError):
        load_tabular("mnist")
    a, b = load_sklearn("wine", seed=1), load_sklearn("wine", seed=1)
    np.testing.assert_array_equal(a.test, b.test)
