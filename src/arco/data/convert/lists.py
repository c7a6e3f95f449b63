"""The public split lists that papers in this field train and test on (fact tables, not code).

- ACDC, SSL4MIS (github.com/HiLab-git/SSL4MIS, ``data/ACDC/*.list``): 70 training, 10 validation and 20 test
  patients of the 100 ACDC training patients, in list order. Each patient contributes its ED frame as
  ``patientXXX_frame01`` and its ES frame as ``patientXXX_frame02``, in that order. ``train_slices.list``
  lists the slices of the training frames, 1-based (``_slice_1`` is array slice 0), in the order below (the
  order matters: "1 labeled patient" = the first 23 rows).
- LA, UA-MT (github.com/yulequan/UA-MT, ``data/train.list``, ``data/test.list``): 80 training and 20 test
  cases of the 100 cases of the 2018 Atrial Segmentation Challenge training set, in list order.
"""

from __future__ import annotations

__all__ = [
    "ACDC_TRAIN",
    "ACDC_VAL",
    "ACDC_TEST",
    "ACDC_SLICE_ORDER",
    "LA_TRAIN",
    "LA_TEST",
]

ACDC_TRAIN = """
patient099 patient038 patient050 patient100 patient058 patient021 patient049 patient020 patient072 patient040
patient060 patient089 patient004 patient056 patient098 patient096 patient031 patient018 patient094 patient047
patient048 patient055 patient097 patient074 patient043 patient041 patient063 patient037 patient095 patient054
patient026 patient088 patient032 patient069 patient006 patient071 patient012 patient073 patient061 patient017
patient025 patient010 patient057 patient029 patient051 patient005 patient036 patient046 patient062 patient034
patient076 patient092 patient070 patient077 patient067 patient003 patient091 patient016 patient014 patient044
patient042 patient090 patient053 patient027 patient035 patient086 patient023 patient009 patient079 patient015
""".split()

ACDC_VAL = """
patient028 patient085 patient082 patient087 patient019 patient030 patient078 patient045 patient002 patient039
""".split()

ACDC_TEST = """
patient011 patient013 patient084 patient033 patient093 patient022 patient068 patient024 patient083 patient081
patient080 patient001 patient007 patient066 patient008 patient065 patient075 patient064 patient059 patient052
""".split()

_ACDC_SLICES = """
patient099_frame01 15 11 1 16 9 7 4 13 8 5 14 6 12 3 10 2
patient099_frame02 5 9 11 2 3 10 1 15 14 4 6 16 13 8 12 7
patient038_frame01 5 3 4 7 6 2 1 8
patient038_frame02 8 5 1 7 4 3 6 2
patient050_frame01 8 3 5 10 6 4 7 2 1 9
patient050_frame02 10 8 5 3 7 2 1 4 9 6
patient100_frame01 3 1 5 2 8 7 4 6
patient100_frame02 1 5 6 8 4 2 7 3
patient058_frame01 2 3 9 6 8 1 7 5 4
patient058_frame02 2 9 3 7 1 4 5 6 8
patient021_frame01 2 4 10 3 1 7 6 9 8 5
patient021_frame02 9 6 8 7 10 5 2 1 3 4
patient049_frame01 1 3 5 2 7 4 6
patient049_frame02 4 6 1 7 3 2 5
patient020_frame01 8 6 2 1 7 3 4 5
patient020_frame02 7 5 2 6 8 3 4 1
patient072_frame01 7 4 2 1 3 8 6 5
patient072_frame02 7 3 5 1 4 8 6 2
patient040_frame01 2 5 9 1 3 6 4 7 10 8
patient040_frame02 8 3 2 9 5 4 6 10 7 1
patient060_frame01 1 8 7 4 5 6 3 2 9
patient060_frame02 3 9 8 6 5 7 2 1 4
patient089_frame01 6 3 2 5 4 1
patient089_frame02 2 6 3 5 4 1
patient004_frame01 5 8 2 7 4 1 9 10 6 3
patient004_frame02 9 4 3 6 7 8 2 1 5 10
patient056_frame01 2 8 4 3 9 6 1 5 7
patient056_frame02 4 8 3 6 7 5 1 9 2
patient098_frame01 2 6 4 7 5 1 3
patient098_frame02 4 3 5 1 2 6 7
patient096_frame01 15 12 4 3 9 2 16 17 8 18 11 7 1 10 6 14 5 13
patient096_frame02 17 8 4 15 14 12 1 16 3 6 2 11 13 10 7 9 18 5
patient031_frame01 3 2 6 9 1 5 8 10 4 7
patient031_frame02 10 5 9 4 7 2 1 6 8 3
patient018_frame01 5 1 6 4 2 3 7 8
patient018_frame02 5 3 1 6 7 2 8 4
patient094_frame01 10 9 3 5 1 7 4 8 2 6
patient094_frame02 8 1 3 10 2 6 5 9 7 4
patient047_frame01 3 4 9 8 2 7 5 1 6
patient047_frame02 8 3 7 2 6 9 5 1 4
patient048_frame01 2 8 3 5 6 4 7 1
patient048_frame02 5 3 2 1 4 7 8 6
patient055_frame01 5 8 1 2 6 4 9 3 7
patient055_frame02 6 9 1 2 7 5 4 8 3
patient097_frame01 8 4 2 7 6 1 5 3
patient097_frame02 8 2 6 3 7 4 5 1
patient074_frame01 5 3 2 6 1 8 4 7
patient074_frame02 7 6 1 8 5 3 2 4
patient043_frame01 9 3 10 11 6 12 5 1 4 2 7 8
patient043_frame02 6 1 5 7 8 11 2 9 4 10 12 3
patient041_frame01 1 5 2 3 4 6
patient041_frame02 1 3 2 4 6 5
patient063_frame01 3 7 1 8 4 2 5 6
patient063_frame02 8 6 3 7 5 4 1 2
patient037_frame01 2 6 7 1 4 5 3
patient037_frame02 6 2 1 7 4 5 3
patient095_frame01 5 10 12 2 13 8 4 7 1 6 11 3 14 9
patient095_frame02 12 2 10 6 14 7 3 13 5 9 4 8 11 1
patient054_frame01 7 1 6 8 2 3 4 5
patient054_frame02 8 7 4 5 2 6 3 1
patient026_frame01 6 8 3 7 10 2 9 5 4 1
patient026_frame02 6 1 3 7 10 9 2 4 5 8
patient088_frame01 6 15 1 9 8 12 11 13 3 10 2 7 4 16 5 14
patient088_frame02 4 12 3 5 2 13 6 15 10 11 1 16 7 14 9 8
patient032_frame01 5 3 4 7 10 8 6 9 1 2
patient032_frame02 8 2 5 3 10 4 7 6 1 9
patient069_frame01 1 3 6 4 7 2 5
patient069_frame02 5 3 4 2 7 1 6
patient006_frame01 6 10 11 3 8 9 2 5 1 4 7
patient006_frame02 9 10 4 5 2 3 7 1 6 11 8
patient071_frame01 8 9 7 5 6 1 10 3 2 4
patient071_frame02 8 2 4 7 1 3 9 6 5 10
patient012_frame01 5 1 8 7 3 10 2 6 4 9
patient012_frame02 8 4 9 7 6 2 3 5 10 1
patient073_frame01 3 7 5 1 4 2 6
patient073_frame02 5 7 4 1 3 2 6
patient061_frame01 4 7 2 5 8 3 1 9 6
patient061_frame02 8 4 2 3 9 7 5 6 1
patient017_frame01 4 8 6 2 3 5 9 7 1
patient017_frame02 3 5 4 8 6 7 1 2 9
patient025_frame01 7 8 6 1 5 4 3 9 2
patient025_frame02 3 6 2 1 5 8 7 9 4
patient010_frame01 9 10 1 2 7 3 8 6 4 5
patient010_frame02 8 5 9 4 10 2 7 1 3 6
patient057_frame01 1 7 5 2 3 8 4 6
patient057_frame02 7 4 1 5 6 3 8 2
patient029_frame01 9 1 5 7 11 3 4 6 10 8 2
patient029_frame02 6 8 2 3 10 1 11 4 9 7 5
patient051_frame01 7 9 3 4 10 8 2 1 6 5
patient051_frame02 5 10 1 4 3 8 9 7 6 2
patient005_frame01 3 8 9 1 5 2 4 6 10 7
patient005_frame02 4 8 3 2 7 10 9 6 5 1
patient036_frame01 5 2 8 7 1 4 6 3
patient036_frame02 6 1 8 5 7 3 4 2
patient046_frame01 6 1 3 7 8 5 4 2 9
patient046_frame02 1 7 9 6 3 8 5 2 4
patient062_frame01 1 10 4 9 8 7 2 3 5 6
patient062_frame02 9 2 7 6 5 10 3 4 1 8
patient034_frame01 6 2 7 8 9 10 1 4 5 3
patient034_frame02 1 3 5 10 9 4 8 6 7 2
patient076_frame01 1 5 6 3 7 2 4 8
patient076_frame02 6 5 4 3 2 1 8 7
patient092_frame01 3 9 12 4 6 7 2 11 5 10 13 14 1 8 15
patient092_frame02 8 1 5 12 14 9 3 6 13 15 11 7 10 4 2
patient070_frame01 3 4 1 6 5 2
patient070_frame02 4 2 1 6 3 5
patient077_frame01 6 4 5 7 8 1 2 3
patient077_frame02 3 2 7 4 1 8 5 6
patient067_frame01 8 2 1 3 6 7 4 10 9 5
patient067_frame02 10 7 6 8 9 4 3 1 5 2
patient003_frame01 5 3 8 4 2 6 9 10 7 1
patient003_frame02 2 5 9 6 8 3 7 1 4 10
patient091_frame01 2 8 6 5 7 4 1 3
patient091_frame02 6 7 4 1 2 5 3 8
patient016_frame01 9 5 1 2 8 10 6 3 7 4
patient016_frame02 2 3 8 5 1 6 4 9 7 10
patient014_frame01 5 9 1 8 6 2 3 4 7 10
patient014_frame02 6 3 5 10 7 9 8 2 1 4
patient044_frame01 4 6 9 5 7 1 8 2 3
patient044_frame02 3 5 1 7 2 9 6 4 8
patient042_frame01 2 6 3 8 7 5 4 9 1
patient042_frame02 4 2 5 9 1 6 8 3 7
patient090_frame01 4 3 7 6 2 5 1
patient090_frame02 1 4 2 7 5 3 6
patient053_frame01 1 7 5 6 3 4 2
patient053_frame02 2 6 4 5 7 1 3
patient027_frame01 2 5 6 10 1 4 7 8 9 3
patient027_frame02 5 9 7 6 1 8 4 3 2 10
patient035_frame01 8 6 11 5 2 3 9 12 10 7 13 1 4
patient035_frame02 9 4 3 13 12 10 8 6 1 2 5 11 7
patient086_frame01 6 5 3 4 7 2 1
patient086_frame02 1 5 3 2 7 6 4
patient023_frame01 7 1 5 2 4 8 9 3 6
patient023_frame02 7 6 9 2 5 1 3 8 4
patient009_frame01 4 10 7 5 2 6 8 3 1 9
patient009_frame02 2 4 7 10 9 1 5 8 6 3
patient079_frame01 5 4 1 2 8 9 6 3 7
patient079_frame02 6 5 1 4 8 9 7 2 3
patient015_frame01 6 7 9 1 5 8 4 3 2
patient015_frame02 5 1 6 3 2 7 4 9 8
"""

#: training frame -> slice numbers (1-based) in ``train_slices.list`` order.
ACDC_SLICE_ORDER = {row.split()[0]: tuple(int(k) for k in row.split()[1:]) for row in _ACDC_SLICES.strip().splitlines()}

LA_TRAIN = """
06SR5RBREL16DQ6M8LWS 0RZDK210BSMWAA6467LU 1D7CUD1955YZPGK8XHJX 1GU15S0GJ6PFNARO469W 1MHBF3G6DCPWHSKG7XCP
23X6SY44VT9KFHR7S7OC 2XL5HSFSE93RMOJDRGR4 38CWS74285MFGZZXR09Z 3C2QTUNI0852XV7ZH4Q1 3DA0T2V6JJ2NLUAV6FWM
4498CA6DZWELOXCBRYRF 45C45I6IXAFGNRO067W9 4CHFJGF6ZUM7CMZTNFQF 4EPVTT1HPA8U60CDUKXE 57SGAJMLCTCH92QUA0EE
5BHTH9RHH3PQT913I59W 5FKQL4K14KCB72Y8YMC2 5HH0WPWIY06DLAFOBQ4M 5QFK2PMHNX7UALK52NNA 5UB5KFD2PK38Z4LS6W80
6799D6LEBH3NSRV1KH27 78NJ5YFQF72BGC8RO51C 7FUCNXB39F78WTOP5K71 8GYK8A9MBRC9TV0FVSRA 8M99G0JLAXG9GLPV0O8G
8RE90C8H5DKF4V6HO8UU 8ZG2TRZ81MAWHZPN9KKG 9DCM2IB45SK6YKQNYUQY 9DHWWP5Y66VDMPXISZ13 9DQYTIU00I4JC0OEOKQQ
A11O45O3NAXWM7T2H8CH A4R1S23KR0KU2WSYHK2X A5RNNK0A891WUSC2V624 AT5CRO5JUDBWD4RUPXSQ BNK95S2SJXEGSW7VAKYU
BXJWOUYP2J3EN4U92517 BYSRSI3H4YTWKMM3MADP BZUFJX66T0W6ZPVTL9DU CB5P5W7X310NIIVU7UZV CBIJFVZ5L9BS0LKWE8YL
CCGAKN4EDT72KC8TTJ76 CLXFYOBQDCVXQ9P7YC07 CMPXO4J23G58J53Q98SZ CZPMV6KWZ4I7IJJP9FOK DLKXBV73A55ZTSZ0QQI2
DQ5UYBGR5QP6L692QSG6 DYXSCIWHLSUOZIDDSZ40 E2ZMO66WGS74UKXTZPPQ EJ5V7SPR4961JWD6SS8V FGM5NIWN3URY4HF4WNUW
GSC9KNY0VEZXFSGWNF25 HVE7DR3CUA2IM3RC6OMA HZZ4O0BRKF8S0YX3NNF7 I2VZ7N8H9QYNYT7ZZF1Y IDWWHGWJ5STOQXSDT6GU
IIY6TYJMTJIZRIZLB9YW IJJY51YW3W4YJJ7DTVTK IQYKPTWXVV9H0IHB8YXC JEC6HJ7SQJXBKVREX03F JGFOLWJF7YCYD8DPHQNH
K32FD6LRSUSSXGS1YUOX KM5RYAMP4P4ZP6XWP3Q2 KSNYHUBHHUJTYJ14UQZR LH4FVU3TQDEC87YGN6FL LJSDNMND9SHKM7Q4IRHJ
MFTDVMBWFNQ3F5KHBRDR MJHV7F65TB2A76CQLOC3 MVKIPGBKTNSENNP1S4HB O5TSIKRD4AIB8K84WIR9 OIRDLE32TXZX942FVZMM
P1OTI3IWJUIB5NRLULLH PVNXUK681N9BY14K4Z86 Q0MEX9ZIKAGJORSPLQ3Y Q7J0WYM695R9MA285ZW0 QZC1W0FNR19KJFLOCFLH
R8ER97O9UUN77C02VE2J RSZY41MT2FGDKHWWL5L2 SN4LF8SGBSRQUPTDSX78 TDDI6L3Y0L9VVFP9MNFS UZUZZT2W9IUSHL6ASOX3
""".split()

LA_TEST = """
UPT6DX9IQY9JAZ7HJKA7 UTBUJIWZMKP64E3N73YC ULHWPWKKLTE921LQLH1P V0MZOWJ6MU3RMRCV9EXR VDOF02M8ZHEAADFMS6NP
VG4C826RAAKVMV9BQLVD VIXBEFTNVHZWKAKURJBN VQ2L3WM8KEVF6L44E6G9 WBG9WYZ1B25WDT5WAT8T WMDG2EFA6L2SNDZXIRU0
WNPKE0W404QE9AELX1LR WSJB9P4JCXUVHBOYFVWL WW8F5CO4S4K5IM5Z7EXX X18LU5AOBNNDMLTA0JZL XYDLYJ5CS19FDBVLJIPI
Y7ZU0B2APPF54WG6PDMF YDKD1HVHSME6NVMA8I39 Z9GMG63CJLL0VW893BB1 ZIJLJAVQV3FJ6JSQOH1E ZQPMJ4XEC5A4BISD45P1
""".split()
