"ROAD's noisy linear imputation: fast_cam's solvers (direct on the CPU, batched conjugate gradients) against pytorch-grad-cam's."
import argparse, time, torch, torch.nn.functional as F
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from fast_cam.metrics import road_impute, removal_mask

def main(n=8, size=224, p=50, device=None):
    dev = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    torch.manual_seed(0)
    xb = torch.randn(n, 3, size, size)
    maps = F.interpolate(torch.rand(n, 1, 7, 7), size=(size, size), mode='bilinear')[:, 0]  # a CAM-like smooth map
    keep = ~removal_mask(maps, p)
    road_impute(xb[:1].to(dev), keep[:1].to(dev), noise=0)  # warm-up
    if dev.type=='cuda': torch.cuda.synchronize()
    t = time.perf_counter(); ours = road_impute(xb.to(dev), keep.to(dev), noise=0)
    if dev.type=='cuda': torch.cuda.synchronize()
    t_ours = time.perf_counter()-t
    other = 'cg' if dev.type=='cpu' else 'direct'
    t = time.perf_counter(); road_impute(xb.to(dev), keep.to(dev), noise=0, solver=other)
    if dev.type=='cuda': torch.cuda.synchronize()
    t_other = time.perf_counter()-t
    t = time.perf_counter()
    ref = torch.stack([NoisyLinearImputer(noise=0)(xb[i], keep[i].float()) for i in range(n)])
    t_pgc = time.perf_counter()-t
    err = ((ours.cpu()-ref).abs().max()/ref.abs().max()).item()
    print(f"{n} images {size} px, {p}% removed, {dev}: fast_cam {t_ours:.3f} s (solver={other!r}: {t_other:.3f} s), "
          f"pytorch-grad-cam {t_pgc:.3f} s, ratio (fast_cam/pgc) {t_ours/t_pgc:.3f}, rel err {err:.1e}")

if __name__=='__main__':
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--n', type=int, default=8); ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--p', type=float, default=50); ap.add_argument('--device', default=None)
    a = ap.parse_args()
    main(a.n, a.size, a.p, a.device)
