/** ISO 4217 codes payq generates and accepts in scenarios, with their minor-unit exponent. */
export const CURRENCY_EXPONENT: Readonly<Record<string, number>> = {
  USD: 2, EUR: 2, GBP: 2, CHF: 2, CAD: 2, AUD: 2, NZD: 2, SEK: 2, NOK: 2, DKK: 2, PLN: 2,
  CZK: 2, HUF: 2, CNY: 2, HKD: 2, SGD: 2, INR: 2, BRL: 2, MXN: 2, ZAR: 2, AED: 2, SAR: 2,
  TRY: 2, ILS: 2, THB: 2, MYR: 2, PHP: 2, IDR: 2, TWD: 2,
  JPY: 0, KRW: 0, VND: 0, CLP: 0, ISK: 0, UGX: 0,
  KWD: 3, BHD: 3, JOD: 3, OMR: 3, TND: 3,
};

export function isKnownCurrency(code: string): boolean {
  return Object.prototype.hasOwnProperty.call(CURRENCY_EXPONENT, code);
}
