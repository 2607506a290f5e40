"""Datasets shaped the way data scientists have them, written the way pandas writes them.

scikit-learn is not a test dependency, so these synthesise the same shapes with numpy and pandas: iris
(species names as the target), titanic (text, missing and boolean columns, names with commas), digits
(`pd.DataFrame(X)` column names 0..63) and California housing (a continuous target). Seeds are fixed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPECIES = np.array(["setosa", "versicolor", "virginica"])


def iris(rows: int = 150, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    species = rng.integers(0, 3, rows)
    centres = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
    x = (centres[species] + rng.normal(0, 0.3, (rows, 4))).round(1)
    frame = pd.DataFrame(
        x, columns=["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    )
    frame["species"] = SPECIES[species]
    return frame


def titanic(rows: int = 891, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["male", "female"], rows, p=[0.65, 0.35])
    pclass = rng.choice([1, 2, 3], rows, p=[0.24, 0.21, 0.55])
    age = rng.normal(30, 14, rows).clip(0.4, 80).round(1)
    age[rng.random(rows) < 0.2] = np.nan
    fare = (rng.lognormal(2.7, 1.0, rows) * (4 - pclass)).round(4)
    embarked = rng.choice(["S", "C", "Q"], rows, p=[0.72, 0.19, 0.09]).astype(object)
    embarked[rng.random(rows) < 0.01] = None
    sibsp = rng.poisson(0.5, rows)
    alone = sibsp == 0
    score = 2.2 * (sex == "female") - 0.8 * (pclass - 2) - 0.02 * np.nan_to_num(age, nan=30) + 0.3 * alone
    survived = (score + rng.normal(0, 0.8, rows) > 0.2).astype(np.int64)
    names = [
        f"Passenger{i}, M{'rs' if s == 'female' else 'r'}. {chr(65 + i % 26)}" for i, s in enumerate(sex)
    ]
    return pd.DataFrame(
        {
            "survived": survived,
            "pclass": pclass,
            "name": names,
            "sex": sex,
            "age": age,
            "sibsp": sibsp,
            "fare": fare,
            "embarked": embarked,
            "alone": alone,
        }
    )


def digits(rows: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) like sklearn's load_digits: 64 pixel intensities 0..16, labels 0..9."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, rows)
    prototypes = rng.integers(0, 17, (10, 64))
    x = np.clip(prototypes[y] + rng.integers(-3, 4, (rows, 64)), 0, 16).astype(np.float64)
    return x, y


def housing(rows: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(1.2, 0.4, rows).round(4)
    rooms = rng.normal(5.4, 1.0, rows).round(3)
    age = rng.integers(1, 52, rows).astype(np.float64)
    value = (0.4 * income + 0.1 * rooms - 0.005 * age + rng.normal(0, 0.2, rows)).round(3)
    return pd.DataFrame({"MedInc": income, "AveRooms": rooms, "HouseAge": age, "MedHouseVal": value})
