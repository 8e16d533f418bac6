"""elan_torch.py — our own PyTorch implementation of ELAN as ../shared/ELAN.md defines it (written for this
project, not taken from the authors' code). It is the reference elansr is measured against: it loads the same
checkpoint, folds nothing (BatchNorm runs as BatchNorm), and exposes the intermediate activations that the C
tests compare with (after the head, after each block, the output).

Padding: PyTorch's reflect mode refuses pads longer than the image; here padding is an index gather that
equals reflect where reflect works and keeps folding back and forth beyond it (elansr does the same).
"""
import math
import re

import torch
import torch.nn.functional as F

MEAN = (0.4488, 0.4371, 0.4040)
WINDOWS = (4, 8, 16)


def mirror_index(n_out, n):
    """Indices 0..n_out-1 folded into 0..n-1 without repeating the edge (period 2(n-1))."""
    idx = torch.arange(n_out)
    if n == 1:
        return torch.zeros(n_out, dtype=torch.long)
    period = 2 * (n - 1)
    j = idx % period
    return torch.where(j < n, j, period - j)


def pad_to_multiple(x, m):
    h, w = x.shape[-2:]
    hp, wp = -(-h // m) * m, -(-w // m) * m
    return x[..., mirror_index(hp, h)[:, None], mirror_index(wp, w)[None, :]]


def load_state_dict(path):
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("params", "params_ema", "state_dict"):
        if isinstance(sd, dict) and key in sd:
            sd = sd[key]
            break
    return {k[7:] if k.startswith("module.") else k: v.float() for k, v in sd.items()}


class ELAN(torch.nn.Module):
    """Inference-only ELAN on a state dict with the names of ../shared/models (FriedRiceLab layout)."""

    def __init__(self, sd):
        super().__init__()
        self.p = {k: v for k, v in sd.items()}
        self.planes = sd["head.weight"].shape[0]
        self.scale = int(round(math.sqrt(sd["tail.0.weight"].shape[0] / 3)))
        self.n_blocks = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.", k)))
        self.n_pairs = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"body\.0\.modules_lfe\.(\d+)\.", k)))

    def to(self, *args, **kwargs):
        self.p = {k: v.to(*args, **kwargs) if v.is_floating_point() else v for k, v in self.p.items()}
        return self

    def conv(self, x, name, padding=0):
        return F.conv2d(x, self.p[name + ".weight"], self.p[name + ".bias"], padding=padding)

    def shift_conv(self, x, name):
        mask = self.p[name + ".mask"]
        x = F.conv2d(x, mask, None, padding=1, groups=x.shape[1])
        return self.conv(x, name)

    def lfe(self, x, name):
        y = self.shift_conv(x, name + ".lfe.0")
        y = F.relu(y)
        return self.shift_conv(y, name + ".lfe.2")

    def gmsa(self, x, name, shifted, atns):
        p = self.p
        x = self.conv(x, name + ".project_inp.0")
        x = F.batch_norm(x, p[name + ".project_inp.1.running_mean"], p[name + ".project_inp.1.running_var"],
                         p[name + ".project_inp.1.weight"], p[name + ".project_inp.1.bias"], False, 0.0, 1e-5)
        b, c, h, w = x.shape
        groups = torch.split(x, c // 3, dim=1)
        ys, new_atns = [], []
        for i, xg in enumerate(groups):
            ws = WINDOWS[i]
            if shifted:
                xg = torch.roll(xg, shifts=(-ws // 2, -ws // 2), dims=(2, 3))
            cg = xg.shape[1]
            # b, cg, h, w -> (b * windows), ws*ws tokens, cg
            t = xg.reshape(b, cg, h // ws, ws, w // ws, ws).permute(0, 2, 4, 3, 5, 1).reshape(-1, ws * ws, cg)
            if atns is None:
                q, v = t[..., : cg // 2], t[..., cg // 2:]
                a = torch.softmax(q @ q.transpose(-1, -2), dim=-1)
                new_atns.append(a)
                cg = cg // 2
            else:
                v, a = t, atns[i]
            y = (a @ v).reshape(b, h // ws, w // ws, ws, ws, cg).permute(0, 5, 1, 3, 2, 4).reshape(b, cg, h, w)
            if shifted:
                y = torch.roll(y, shifts=(ws // 2, ws // 2), dims=(2, 3))
            ys.append(y)
        y = self.conv(torch.cat(ys, dim=1), name + ".project_out")
        return y, (new_atns if atns is None else atns)

    def forward(self, x, taps=None):
        """x: N,3,H,W on 0..255. taps: optional dict filled with 'head', 'block0', 'block1', ... (padded size)."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, 16)
        x = self.conv(x, "sub_mean")
        x = self.conv(x, "head", padding=1)
        head = x
        if taps is not None:
            taps["head"] = head
        for bi in range(self.n_blocks):
            atns = None
            for j in range(self.n_pairs):
                x = x + self.lfe(x, f"body.{bi}.modules_lfe.{j}")
                y, atns = self.gmsa(x, f"body.{bi}.modules_gmsa.{j}", bi % 2 == 1, atns)
                x = x + y
            if taps is not None:
                taps[f"block{bi}"] = x
        x = x + head
        x = self.conv(x, "tail.0", padding=1)
        x = F.pixel_shuffle(x, self.scale)
        x = self.conv(x, "add_mean")
        return x[..., : h * self.scale, : w * self.scale]
